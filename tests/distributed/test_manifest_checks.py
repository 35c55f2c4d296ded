"""An edited manifest is found out against the shards when a store opens,
and on resume, naming the field: never a garbled matrix, dropped rows or
uninitialised memory."""

import json
import shutil

import numpy as np
import pytest

from sklearn_clip.distributed import (
    EmbeddingStore,
    ManifestMismatchError,
    embed_to_parquet,
)

from .conftest import N_IMAGES, SHARD_SIZE, make_tars

pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")
pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]


@pytest.fixture(scope="module")
def finished(featurizer, images, tmp_path_factory):
    output = tmp_path_factory.mktemp("finished") / "store"
    embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE)
    return output


@pytest.fixture
def store_copy(finished, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(finished, copy)
    return copy


def edit(folder, **entries):
    path = folder / "_manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(entries)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "field, value",
    [
        ("embedding_dim", 44),  # a garbled (n, 44) matrix before
        ("embedding_dim", 128),
        ("n_inputs", 24),  # a shard boundary: 5 rows dropped silently before
        ("n_inputs", 20),
        ("n_inputs", 40),
        ("shard_size", 4),
        ("shard_size", 16),
    ],
)
def test_an_edited_shape_raises_on_open_naming_the_field(store_copy, field, value):
    edit(store_copy, **{field: value})
    with pytest.raises(
        ManifestMismatchError, match=f"does not match its shards \\({field}"
    ):
        EmbeddingStore(store_copy)


@pytest.mark.parametrize(
    "field, value",
    [
        ("embedding_dim", "64"),
        ("embedding_dim", 0),
        ("n_inputs", -1),
        ("n_inputs", True),
        ("shard_size", 2.5),
        ("inputs_sha256", None),
        ("layout", "zip files"),
    ],
)
def test_an_entry_of_the_wrong_type_raises_naming_it(store_copy, field, value):
    edit(store_copy, **{field: value})
    with pytest.raises(ManifestMismatchError, match=f"{field}={value!r}"):
        EmbeddingStore(store_copy)


def test_an_edited_manifest_is_refused_on_resume(featurizer, images, store_copy):
    edit(store_copy, embedding_dim=44)
    with pytest.raises(ManifestMismatchError, match="embedding_dim: 44 there, 64 now"):
        embed_to_parquet(featurizer, images, store_copy, shard_size=SHARD_SIZE)


def test_a_shard_copied_over_another_is_missing_not_read(store_copy):
    shutil.copy(store_copy / "part-000000.parquet", store_copy / "part-000001.parquet")
    store = EmbeddingStore(store_copy)
    assert store.missing_shards() == [1]
    with pytest.raises(FileNotFoundError, match="1 of 4 shards are missing"):
        store.to_numpy(on_error="nan")


def test_an_unedited_store_reads_back(store_copy, expected):
    store = EmbeddingStore(store_copy)
    assert store.n_inputs == N_IMAGES
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)


def test_tar_stores_check_the_number_of_archives(featurizer, images, tmp_path):
    tars, _ = make_tars(images, tmp_path / "tars")
    output = tmp_path / "store"
    embed_to_parquet(featurizer, tars, output)
    edit(output, n_inputs=2)  # the third archive's 9 rows dropped before
    with pytest.raises(ManifestMismatchError, match="n_inputs is 2 in the manifest"):
        EmbeddingStore(output)
