"""Inputs and stores in an object store: a real S3 API (moto's server on
loopback) read through s3fs, for CLIPFeaturizer and embed_to_parquet."""

import os
from pathlib import Path

import numpy as np
import pytest

from sklearn_clip import CLIPFeaturizer
from sklearn_clip._embedding_cache import content_key
from sklearn_clip.distributed import (
    EmbeddingStore,
    ManifestMismatchError,
    embed_to_parquet,
)

from ..conftest import TINY
from .conftest import BATCH_SIZE, SHARD_SIZE, moto_s3

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]


@pytest.fixture(scope="module")
def s3(images):
    """A bucket on a moto S3 server on 127.0.0.1 holding the images (the
    missing one stays missing); yields ``(urls, storage_options)``."""
    import s3fs

    with moto_s3(("photos", "photos-embeddings")) as options:
        fs = s3fs.S3FileSystem(**options)
        urls = []
        for path in images:
            url = f"s3://photos/{Path(path).name}"
            if os.path.exists(path):
                fs.put(path, url)
            urls.append(url)
        fs.invalidate_cache()
        yield urls, options


def test_featurizer_reads_urls_as_the_files_they_hold(s3, images, expected):
    urls, options = s3
    featurizer = CLIPFeaturizer(
        **TINY, batch_size=BATCH_SIZE, on_error="nan", storage_options=options
    )
    with pytest.warns(UserWarning, match="could not be read"):
        got = featurizer.fit_transform(urls)
    np.testing.assert_array_equal(got, expected)  # NaN rows in the same places


def test_embed_urls_into_a_store_in_the_bucket_and_resume(
    s3, images, expected, monkeypatch
):
    urls, options = s3
    featurizer = CLIPFeaturizer(
        **TINY, batch_size=BATCH_SIZE, on_error="nan", storage_options=options
    )
    output = "s3://photos-embeddings/store"
    store = embed_to_parquet(
        featurizer, urls, output, shard_size=SHARD_SIZE, storage_options=options
    )
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)
    assert list(store.inputs()) == urls
    assert store.content_hashes().tolist() == [
        content_key(path) if os.path.exists(path) else None for path in images
    ]
    failed = dict((row, why) for row, _, why in store.errors())
    assert sorted(failed) == [5, 17]  # a corrupt object and a missing key
    assert "not an image file" in failed[5] and "FileNotFoundError" in failed[17]
    # Lose a shard in the bucket: the same call computes only that one. The
    # shards written are recorded where the worker writes them (the store's
    # LastModified has a 1 s resolution: a rewrite in the same second would
    # look untouched).
    import s3fs

    from sklearn_clip.distributed import _worker

    fs = s3fs.S3FileSystem(**options)
    fs.rm(f"{output}/part-000002.parquet")
    fs.invalidate_cache()
    before = {p: fs.cat_file(p) for p in fs.ls(output) if "part-" in p}
    written = []
    write_shard = _worker.write_shard

    def recording(table, shard, *args, **kwargs):
        written.append(shard)
        return write_shard(table, shard, *args, **kwargs)

    monkeypatch.setattr(_worker, "write_shard", recording)
    store = embed_to_parquet(
        featurizer, urls, output, shard_size=SHARD_SIZE, storage_options=options
    )
    assert written == [2]
    fs.invalidate_cache()
    after = {p: fs.cat_file(p) for p in fs.ls(output) if "part-" in p}
    assert set(after) == set(before) | {"photos-embeddings/store/part-000002.parquet"}
    assert all(after[p] == before[p] for p in before)
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)
    # Another job in the same folder is refused there too.
    with pytest.raises(ManifestMismatchError, match="n_inputs"):
        embed_to_parquet(
            featurizer, urls[:8], output, shard_size=SHARD_SIZE, storage_options=options
        )
    reopened = EmbeddingStore(output, storage_options=options)
    assert reopened.is_complete and reopened.n_inputs == len(urls)


def test_cli_embeds_a_list_of_urls_into_the_bucket(s3, expected, tmp_path, capsys):
    import json

    from sklearn_clip._cli import main as cli_main

    urls, options = s3
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(urls[:8]) + "\n")
    argv = ["embed", str(listing), "-o", "s3://photos-embeddings/cli"]
    argv += ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]
    argv += ["--batch-size", str(BATCH_SIZE), "--storage-options", json.dumps(options)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "8 images in 1 shard at s3://photos-embeddings/cli: 8 rows: 7 embedded, "
        "1 error rows (permanent: 1 ValueError)"
    ) in printed
    store = EmbeddingStore("s3://photos-embeddings/cli", storage_options=options)
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected[:8])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["embed", str(listing), "-o", "x", "--storage-options", "[1]"])
    assert exit_info.value.code == 2
    assert "must be a JSON object" in capsys.readouterr().err


def test_webdataset_archives_in_the_bucket(s3, featurizer, images, tmp_path):
    import s3fs

    from .conftest import make_tars

    _, options = s3
    tars, samples = make_tars(images, tmp_path / "tars")
    fs = s3fs.S3FileSystem(**options)
    urls = []
    for path in tars:
        url = f"s3://photos/tars/{os.path.basename(path)}"
        fs.put(path, url)
        urls.append(url)
    remote = CLIPFeaturizer(
        **TINY, batch_size=BATCH_SIZE, on_error="nan", storage_options=options
    )
    store = embed_to_parquet(remote, urls, tmp_path / "store")
    with pytest.warns(UserWarning, match="could not be read"):
        expected = np.concatenate(
            [featurizer.fit_transform([item for _, item in held]) for held in samples]
        )
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)
    assert store.inputs()[0] == f"{urls[0]}#000000"
