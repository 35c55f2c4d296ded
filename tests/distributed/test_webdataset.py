"""WebDataset tar archives as inputs: one shard per archive, one row per
sample (its key kept as the row's identity), read as a stream."""

import os

import numpy as np
import pytest

from sklearn_clip.distributed import EmbeddingStore, embed_to_parquet
from sklearn_clip.distributed._tars import iter_tar_samples, sample_key

from .conftest import make_tars, part_times

pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")
pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]


@pytest.fixture(scope="module")
def archives(images, tmp_path_factory):
    return make_tars(images, tmp_path_factory.mktemp("tars"))


def expected_rows(featurizer, samples):
    """Each archive embedded on its own, as one shard's worker does."""
    with pytest.warns(UserWarning, match="could not be read"):
        return np.concatenate(
            [featurizer.fit_transform([item for _, item in held]) for held in samples]
        )


def test_sample_keys_follow_the_webdataset_convention():
    assert sample_key("dir/000017.jpg") == ("dir/000017", "jpg")
    assert sample_key("000017.seg.PNG") == ("000017", "seg.png")


def test_samples_stream_in_order_with_a_row_for_every_sample(archives):
    tars, samples = archives
    got = list(iter_tar_samples(tars[1]))
    assert [key for key, _ in got] == [key for key, _ in samples[1]]
    # images[17] is missing: its sample holds a label and no image.
    reasons = {key: str(item.error) for key, item in got if hasattr(item, "error")}
    assert reasons and "no image file in this sample (files: cls)" in reasons["000017"]


def test_archives_embed_bitwise_with_keys_errors_and_resume(
    featurizer, archives, tmp_path
):
    tars, samples = archives
    expected = expected_rows(featurizer, samples)
    output = tmp_path / "store"
    with pytest.warns(UserWarning, match="shard_size has no effect"):
        embed_to_parquet(featurizer, tars, output, shard_size=8)
    store = EmbeddingStore(output)
    assert store.n_shards == len(tars) and store.n_inputs == len(expected)
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)
    keys = [f"{tar}#{key}" for tar, held in zip(tars, samples) for key, _ in held]
    assert list(store.inputs()) == keys
    errors = {row: why for row, _, why in store.errors()}
    assert sorted(errors) == [5, 17]  # a corrupt image, a sample without one
    assert "no image file in this sample" in errors[17]
    # Lose the second archive's shard: only it is read again.
    before = part_times(output)
    os.remove(output / "part-000001.parquet")
    store = embed_to_parquet(featurizer, tars, output)
    after = part_times(output)
    assert {k: v for k, v in after.items() if k != "part-000001.parquet"} == {
        k: v for k, v in before.items() if k != "part-000001.parquet"
    }
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)


def test_archives_and_image_files_are_not_mixed(featurizer, archives, images, tmp_path):
    tars, _ = archives
    with pytest.raises(ValueError, match="mix 1 .tar archives with 1 other"):
        embed_to_parquet(featurizer, [tars[0], images[0]], tmp_path / "store")
