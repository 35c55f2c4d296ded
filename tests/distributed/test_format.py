"""The on-disk format (distributed._format): page checksums that never let a
damaged shard through, shards of other jobs never used, true messages."""

import os

import numpy as np
import pytest

from sklearn_clip._embedding_cache import content_key
from sklearn_clip.distributed import (
    EmbeddingStore,
    embed_to_parquet,
)

from .conftest import SHARD_SIZE, damage, part_times

pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]
pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")


def test_a_shard_of_another_job_is_never_used(featurizer, images, expected, tmp_path):
    a = embed_to_parquet(featurizer, images[:16], tmp_path / "a", shard_size=8)
    b = embed_to_parquet(featurizer, images[8:24], tmp_path / "b", shard_size=8)
    assert a.is_complete and b.is_complete
    (tmp_path / "b" / "part-000000.parquet").write_bytes(
        (tmp_path / "a" / "part-000000.parquet").read_bytes()
    )
    assert b.missing_shards() == [0]
    with pytest.raises(FileNotFoundError, match=r"missing or not valid \(0\)"):
        b.read_shard(0)
    with pytest.warns(UserWarning, match="written for another input list"):
        b = embed_to_parquet(featurizer, images[8:24], tmp_path / "b", shard_size=8)
    with pytest.warns(UserWarning, match="could not be read"):  # images[17]
        np.testing.assert_array_equal(b.to_numpy(on_error="nan"), expected[8:24])


@pytest.mark.parametrize(
    "column, xor_bytes",
    [("embedding", 1), ("embedding", 64), ("content_sha256", 1)],
    ids=["bit in an embedding", "64 bytes", "bit in a content hash"],
)
def test_a_damaged_data_page_is_never_returned(
    featurizer, images, expected, tmp_path, column, xor_bytes
):
    from sklearn_clip._embedding_cache import EmbeddingCache

    output = tmp_path / "store"
    store = embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE)
    damage(output / "part-000001.parquet", column, xor_bytes)
    before = part_times(output)
    # Every read that touches the damaged column raises; reads of intact
    # columns return what was written (pages are checked one by one).
    reads = {
        "embedding": lambda: store.to_numpy(on_error="nan"),
        "content_sha256": lambda: store.content_hashes(),
        "input": lambda: store.inputs(),
    }
    for read_column, read in reads.items():
        if read_column == column:
            with pytest.raises(OSError, match="shard 1 of the store .* damaged"):
                read()
    with pytest.raises(OSError, match="shard 1 of the store .* damaged"):
        store.read_shard(1)
    with pytest.raises(OSError, match="shard 1 of the store .* damaged"):
        store.to_embedding_cache(tmp_path / "cache")
    assert list(store.inputs()) == [os.path.abspath(p) for p in images]
    if column != "embedding":
        with pytest.warns(UserWarning, match="could not be read"):
            np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)
    # The export stopped at shard 1: the cache holds shard 0's rows only.
    cache_key = store.manifest["cache_key"]
    hashes = [content_key(path) for path in images[: 2 * SHARD_SIZE]]
    with EmbeddingCache(tmp_path / "cache", cache_key, expected.shape[1]) as cache:
        hits = cache.get(hashes)
    found = [i for i, key in enumerate(hashes) if key in hits]
    assert found == [i for i in range(SHARD_SIZE) if i != 5]  # 5: corrupt image
    # A re-run reads every page, computes shard 1 again, and says so.
    with pytest.warns(UserWarning, match=r"1 shard file\(s\).*part-000001.*damaged"):
        store = embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE)
    after = part_times(output)
    assert after.pop("part-000001.parquet") != before.pop("part-000001.parquet")
    assert after == before  # nothing else rewritten
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)


def test_a_shard_without_page_checksums_is_computed_again(
    featurizer, images, expected, tmp_path
):
    import pyarrow.parquet as pq

    output = tmp_path / "store"
    store = embed_to_parquet(featurizer, images[:16], output, shard_size=SHARD_SIZE)
    path = output / "part-000000.parquet"
    table = pq.read_table(path)  # as an older version wrote it
    metadata = dict(table.schema.metadata)
    del metadata[b"sklearn_clip.page_checksums"]
    pq.write_table(table.replace_schema_metadata(metadata), path)
    assert store.missing_shards() == [0]
    with pytest.raises(FileNotFoundError, match="missing or not valid"):
        store.to_numpy()
    with pytest.warns(UserWarning, match="without page checksums"):
        store = embed_to_parquet(featurizer, images[:16], output, shard_size=SHARD_SIZE)
    assert store.is_complete


def test_messages_say_what_is_true(featurizer, images, tmp_path):
    import json

    output = tmp_path / "store"
    embed_to_parquet(featurizer, images[:16], output, shard_size=SHARD_SIZE)
    # A part file past the job's last shard is ignored, not "computed again".
    (output / "part-000009.parquet").write_bytes(
        (output / "part-000001.parquet").read_bytes()
    )
    with pytest.warns(UserWarning) as record:
        embed_to_parquet(featurizer, images[:16], output, shard_size=SHARD_SIZE)
    messages = [str(w.message) for w in record]
    assert any("part-000009" in m and "ignored" in m for m in messages)
    assert not any("computed again" in m for m in messages)
    # An edited manifest: re-running "with the same arguments" would be
    # refused, so the store does not suggest it.
    manifest_path = output / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["cache_key"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError) as error:
        EmbeddingStore(output).to_numpy()
    assert "was the manifest edited" in str(error.value)
    assert "same arguments" not in str(error.value)
