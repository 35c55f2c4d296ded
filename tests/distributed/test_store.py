"""EmbeddingStore: export into the embedding cache, memory-mapped output."""

import numpy as np
import pytest

from sklearn_clip import CLIPFeaturizer
from sklearn_clip.distributed import (
    EmbeddingStore,
    embed_to_parquet,
)

from ..conftest import TINY
from .conftest import N_IMAGES

pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]
pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")


def test_export_into_the_embedding_cache_gives_warm_hits(
    featurizer, images, expected, tmp_path, monkeypatch
):
    store = embed_to_parquet(featurizer, images, tmp_path / "store", shard_size=8)
    assert store.to_embedding_cache(tmp_path / "cache") == N_IMAGES - 2
    embedded = []
    original = CLIPFeaturizer._embed

    def counting(self, items, todo, *args):
        embedded.extend(int(i) for i in todo)
        return original(self, items, todo, *args)

    monkeypatch.setattr(CLIPFeaturizer, "_embed", counting)
    cached = CLIPFeaturizer(**TINY, on_error="nan", cache_dir=tmp_path / "cache")
    with pytest.warns(UserWarning, match="could not be read"):
        got = cached.fit_transform(images)
    assert embedded == [5, 17]  # only the two bad inputs were tried again
    np.testing.assert_array_equal(got, expected)


def test_memory_mapped_output(featurizer, images, expected, tmp_path):
    store = embed_to_parquet(featurizer, images, tmp_path / "store", shard_size=8)
    path = tmp_path / "X.npy"
    with pytest.warns(UserWarning, match="could not be read"):
        got = store.to_numpy(on_error="nan", memmap_path=path)
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(np.load(path), expected)


def test_shard_validity_is_read_once_per_file_version(
    featurizer, images, tmp_path, monkeypatch
):
    import sklearn_clip.distributed._format as format_module

    output = tmp_path / "store"
    store = embed_to_parquet(featurizer, images[:16], output, shard_size=8)
    reads = []
    original = format_module.shard_problem
    monkeypatch.setattr(
        format_module,
        "shard_problem",
        lambda fs, name, *a, **k: reads.append(name) or original(fs, name, *a, **k),
    )
    store = EmbeddingStore(output)  # opening checks every footer once
    assert len(reads) == 2
    assert store.missing_shards() == [] and len(reads) == 2  # from the listing
    (output / "part-000001.parquet").write_bytes(b"rewritten")
    assert store.missing_shards() == [1] and len(reads) == 3  # that file only
    (output / "part-000000.parquet").unlink()
    assert store.missing_shards() == [0, 1] and len(reads) == 3
