"""The embedding cache (_embedding_cache): checksummed rows, damaged files moved
aside, read-only caches, checkpoint identity, concurrent processes. Each test
compares against a fresh, uncached computation."""

import os
import sqlite3
import warnings

import numpy as np
import pytest

import sklearn_clip._embedding_cache as cache_module
from sklearn_clip import CLIPFeaturizer
from sklearn_clip._embedding_cache import EmbeddingCache, checkpoint_identity

from .conftest import TINY


def featurizer(cache_dir=None, **params):
    return CLIPFeaturizer(
        **TINY, batch_size=4, num_workers=0, cache_dir=cache_dir, **params
    )


@pytest.fixture
def photos(photo_set):
    return [path for path, _, _ in photo_set("cifar10")[:6]]


def _database(cache_dir):
    return os.path.join(cache_dir, "embeddings.sqlite")


def test_a_damaged_stored_vector_is_a_miss(photos, tmp_path):
    cache_dir = str(tmp_path / "cache")
    expected = featurizer(cache_dir).fit_transform(photos)
    with sqlite3.connect(_database(cache_dir)) as db:
        content, blob = db.execute(
            "SELECT content, vector FROM checked_embeddings LIMIT 1"
        ).fetchone()
        damaged = bytearray(blob)
        damaged[5] ^= 0xFF  # one byte changed, length kept
        db.execute(
            "UPDATE checked_embeddings SET vector = ? WHERE content = ?",
            [bytes(damaged), content],
        )
    with pytest.warns(UserWarning, match="1 damaged embedding.*checksum"):
        again = featurizer(cache_dir).fit_transform(photos)
    np.testing.assert_allclose(again, expected, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # replaced: the next run is clean
        featurizer(cache_dir).fit_transform(photos)


def test_an_overwritten_checkpoint_gets_a_new_identity(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"A" * 4096)
    before = os.stat(path)
    first = checkpoint_identity(str(path))
    with open(path, "r+b") as handle:  # same inode, same size
        handle.write(b"B" * 4096)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    monkeypatch.setattr(cache_module, "_CHECKPOINT_HASHES", {})  # a new process
    assert checkpoint_identity(str(path)) != first
    assert checkpoint_identity("openai") == "openai"


def _overwrite_cache_file(cache_dir, damage):
    database = _database(cache_dir)
    data = bytearray(open(database, "rb").read())
    if damage == "random bytes":
        data = np.random.default_rng(0).bytes(len(data))
    elif damage == "truncated":
        data = data[: len(data) // 3] if len(data) > 200 else data[:50]
    else:  # garbage mid-file
        middle = len(data) // 2
        data[100:] = bytes(len(data) - 100) if len(data) < 4096 else data[100:]
        data[middle - 2000 : middle + 2000] = np.random.default_rng(1).bytes(4000)
    with open(database, "wb") as handle:
        handle.write(bytes(data))
    for suffix in ("-wal", "-shm"):
        if os.path.exists(database + suffix):
            os.remove(database + suffix)
    return database


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_a_damaged_cache_file_is_moved_aside(photos, tmp_path, damage):
    cache_dir = str(tmp_path / "cache")
    expected = featurizer(cache_dir).fit_transform(photos)
    database = _overwrite_cache_file(cache_dir, damage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = featurizer(cache_dir).fit_transform(photos)
    np.testing.assert_allclose(again, expected, atol=1e-6)
    messages = [str(w.message) for w in caught if "damaged" in str(w.message)]
    assert messages and database in messages[0] and "moved to" in messages[0]
    assert any(
        name.startswith("embeddings.sqlite.damaged-") for name in os.listdir(cache_dir)
    )


def test_garbage_inside_the_cache_file_is_never_returned(photos, tmp_path):
    # 4,000 random bytes mid-file may hit rows (their checksums fail), the
    # file's structure (moved aside) or free pages (nothing to notice): in
    # every case the embeddings are those of a fresh computation, and stay so.
    cache_dir = str(tmp_path / "cache")
    expected = featurizer(cache_dir).fit_transform(photos)
    _overwrite_cache_file(cache_dir, "garbage mid-file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = featurizer(cache_dir).fit_transform(photos)
        third = featurizer(cache_dir).fit_transform(photos)
    np.testing.assert_allclose(again, expected, atol=1e-6)
    np.testing.assert_allclose(third, expected, atol=1e-6)


def test_a_read_only_cache_serves_hits_and_stores_nothing(
    photos, tmp_path, monkeypatch
):
    cache_dir = str(tmp_path / "cache")
    expected = featurizer(cache_dir).fit_transform(photos[:4])

    # Root may write anywhere, so the read-only file system is simulated at
    # the point where SQLite reports it; the fallback opens the real file.
    def read_only(self):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(EmbeddingCache, "_connect", read_only)
    with pytest.warns(UserWarning, match="is read-only.*not stored") as record:
        mixed = featurizer(cache_dir).fit_transform(photos)
    assert len([w for w in record if "read-only" in str(w.message)]) == 1
    np.testing.assert_allclose(mixed, featurizer().fit_transform(photos), atol=1e-6)
    np.testing.assert_allclose(mixed[:4], expected, atol=1e-6)
    monkeypatch.undo()
    with EmbeddingCache(cache_dir, "unused", 64) as cache:
        assert len(cache) == 0  # other namespace
    with sqlite3.connect(_database(cache_dir)) as db:
        (stored,) = db.execute("SELECT COUNT(*) FROM checked_embeddings").fetchone()
    assert stored == 4  # the misses were not stored


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_directory_serves_hits(photos, tmp_path):
    cache_dir = tmp_path / "cache"
    expected = featurizer(cache_dir).fit_transform(photos[:4])
    for path in [cache_dir, *cache_dir.iterdir()]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        with pytest.warns(UserWarning, match="read-only"):
            mixed = featurizer(cache_dir).fit_transform(photos)
        np.testing.assert_allclose(mixed[:4], expected, atol=1e-6)
    finally:
        for path in [cache_dir, *cache_dir.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_home_is_expanded_in_cache_and_memmap_dirs(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    embeddings = featurizer("~/clip-cache", memmap_dir="~/memmaps").fit_transform(
        photos
    )
    assert embeddings.shape == (len(photos), 64)
    assert (tmp_path / "home" / "clip-cache" / "embeddings.sqlite").exists()
    assert list((tmp_path / "home" / "memmaps").glob("*.npy"))
    assert not (tmp_path / "~").exists()


def _open_and_store(directory, barrier, results):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        barrier.wait()  # both processes open the new cache at the same moment
        with EmbeddingCache(directory, "ns", 4) as cache:
            cache.put([f"key-{os.getpid()}"], np.ones((1, 4), np.float32))
    results.put([str(warning.message) for warning in caught])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs the fork start method")
def test_processes_opening_a_new_cache_at_once_never_see_damage(tmp_path):
    # Switching a new database to WAL answers "database is locked" at once to
    # a second process: that used to move a healthy cache aside as damaged.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(30):
        directory = tmp_path / str(attempt)
        barrier, results = context.Barrier(2), context.Queue()
        processes = [
            context.Process(target=_open_and_store, args=(directory, barrier, results))
            for _ in range(2)
        ]
        for process in processes:
            process.start()
        messages = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join()
            assert process.exitcode == 0
        assert messages == [[], []]
        with sqlite3.connect(directory / "embeddings.sqlite") as db:
            (count,) = db.execute("SELECT COUNT(*) FROM checked_embeddings").fetchone()
        assert count == 2
        assert not list(directory.glob("*.damaged-*"))
