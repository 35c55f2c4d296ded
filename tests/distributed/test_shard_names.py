"""Shard files are recognised by their exact name: a renamed copy, a backup
or a name with a digit too many is not a shard (it once counted as one, and
resume never recomputed the real shard)."""

import shutil

import numpy as np
import pytest

from sklearn_clip.distributed import EmbeddingStore, embed_to_parquet
from sklearn_clip.distributed._format import output_location, shard_files

from .conftest import part_times

pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")
pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]

LOOKALIKES = [
    "old-part-000001.parquet",
    "part-000001.parquet.bak",
    "part-0000001.parquet",
    "part-000001.parquet.tmp",
    "part-00001.parquet",
]


def test_only_exact_names_are_shards(featurizer, images, expected, tmp_path):
    output = tmp_path / "store"
    embed_to_parquet(featurizer, images[:16], output, shard_size=8)
    for name in LOOKALIKES:
        shutil.copy(output / "part-000001.parquet", output / name)
    (output / "part-000001.parquet").unlink()
    fs, root = output_location(output)
    assert sorted(shard_files(fs, root)) == [0]
    assert EmbeddingStore(output).missing_shards() == [1]
    before = part_times(output)
    store = embed_to_parquet(featurizer, images[:16], output, shard_size=8)
    after = part_times(output)
    assert after["part-000000.parquet"] == before["part-000000.parquet"]
    assert "part-000001.parquet" in after and store.is_complete
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected[:16])
