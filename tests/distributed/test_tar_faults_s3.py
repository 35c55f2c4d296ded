"""Tar archives in an object store (moto's S3 server on loopback): one cut
short fails its shard, one rewritten since its shard was written is read
again on resume, in the same process (no listing cached by s3fs hides it)."""

import shutil
from pathlib import Path

import pytest

from sklearn_clip import CLIPFeaturizer
from sklearn_clip.distributed import ShardsFailedError, embed_to_parquet

from ..conftest import TINY
from .conftest import BATCH_SIZE, make_tars, part_times
from .test_object_stores import s3  # noqa: F401 - the moto server fixture

pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]


def test_cut_and_rewritten_archives_in_a_bucket(s3, images, tmp_path):  # noqa: F811
    import s3fs

    _, options = s3
    tars, _ = make_tars(images, tmp_path / "tars")
    fs = s3fs.S3FileSystem(**options)
    urls = [f"s3://photos/faults/{Path(path).name}" for path in tars]
    for path, url in zip(tars, urls):
        fs.put(path, url)
    fs.ls("s3://photos/faults/")  # a listing cached by this process
    data = Path(tars[1]).read_bytes()
    fs.pipe(urls[1], data[: len(data) // 2])  # a partial upload
    remote = CLIPFeaturizer(
        **TINY, batch_size=BATCH_SIZE, on_error="nan", storage_options=options
    )
    output = tmp_path / "store"
    with pytest.raises(ShardsFailedError, match="incomplete or damaged") as failed:
        embed_to_parquet(remote, urls, output)
    assert list(failed.value.failures) == [1]
    fs.put(tars[1], urls[1])  # the upload completes
    store = embed_to_parquet(remote, urls, output)
    assert store.n_inputs == 29
    before = part_times(output)
    # The last archive is replaced by another one (the first, re-uploaded).
    shutil.copy(tars[0], tmp_path / "other.tar")
    fs.put(str(tmp_path / "other.tar"), urls[2])
    with pytest.warns(UserWarning, match="its archive changed since it was read"):
        store = embed_to_parquet(remote, urls, output)
    after = part_times(output)
    assert after["part-000002.parquet"] != before["part-000002.parquet"]
    assert after["part-000000.parquet"] == before["part-000000.parquet"]
    assert store.n_inputs == 30  # 10 + 10 + the 10 samples of the new archive
