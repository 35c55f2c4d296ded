"""Nothing wrong is ever returned: embedding-cache integrity, exact image
decoding and clear errors (each test compares against a fresh, uncached
computation or checks that the message names the item and the remedy)."""

import os
import sqlite3
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

import sklearn_clip._embedding_cache as cache_module
from sklearn_clip import CLIPFeaturizer, ImageLoadError, load_image
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


# -- silent wrong results ---------------------------------------------------------


def _palette_pair():
    indices = np.arange(64, dtype=np.uint8).reshape(8, 8) % 4
    first = Image.fromarray(indices, mode="P")
    first.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    second = first.copy()
    second.putpalette(
        [255, 255, 255, 0, 255, 255, 255, 0, 255, 255, 255, 0] + [0] * 756
    )
    return first, second


def test_palette_images_differing_only_in_palette_get_their_own_embeddings(tmp_path):
    first, second = _palette_pair()
    transparent = first.copy()
    transparent.info["transparency"] = 1
    items = [first, second, transparent]
    fresh = featurizer().fit_transform(items)
    assert not np.allclose(fresh[0], fresh[1]) and not np.allclose(fresh[0], fresh[2])
    cached = featurizer(tmp_path / "cache").fit_transform(items)  # one call: dedup
    np.testing.assert_allclose(cached, fresh, atol=1e-6)
    warm = featurizer(tmp_path / "cache").fit_transform(items[::-1])
    np.testing.assert_allclose(warm, fresh[::-1], atol=1e-6)


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


def test_sixteen_bit_images_share_one_scale(tmp_path):
    values = np.arange(256, dtype=np.uint16).reshape(16, 16)
    bright, dark = tmp_path / "bright.png", tmp_path / "dark.png"
    Image.fromarray(values * 257).save(bright)  # full 16-bit range
    Image.fromarray(values).save(dark)  # the same file type, all values <= 255
    assert Image.open(dark).mode.startswith("I")
    decoded_bright = np.asarray(load_image(bright))[..., 0]
    np.testing.assert_array_equal(decoded_bright, values.astype(np.uint8))
    # A dark 16-bit image stays dark instead of being read as 8-bit.
    assert np.asarray(load_image(dark)).max() <= 1


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


# -- raw or misleading errors -------------------------------------------------------


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "garbage mid-file"])
def test_a_damaged_cache_file_is_moved_aside(photos, tmp_path, damage):
    cache_dir = str(tmp_path / "cache")
    expected = featurizer(cache_dir).fit_transform(photos)
    database = _database(cache_dir)
    data = bytearray(open(database, "rb").read())
    if damage == "random bytes":
        data = np.random.default_rng(0).bytes(len(data))
    elif damage == "truncated":
        data = data[: len(data) // 3] if len(data) > 200 else data[:50]
    else:
        middle = len(data) // 2
        data[100:] = bytes(len(data) - 100) if len(data) < 4096 else data[100:]
        data[middle - 2000 : middle + 2000] = np.random.default_rng(1).bytes(4000)
    with open(database, "wb") as handle:
        handle.write(bytes(data))
    for suffix in ("-wal", "-shm"):
        if os.path.exists(database + suffix):
            os.remove(database + suffix)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = featurizer(cache_dir).fit_transform(photos)
    np.testing.assert_allclose(again, expected, atol=1e-6)
    messages = [str(w.message) for w in caught if "damaged" in str(w.message)]
    if damage != "garbage mid-file" or messages:
        assert messages and database in messages[0] and "moved to" in messages[0]
        assert any(
            name.startswith("embeddings.sqlite.damaged-")
            for name in os.listdir(cache_dir)
        )


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


def test_unreadable_file_reason_says_permission_denied(photos, monkeypatch):
    real_open = Image.open

    def denied(path, *args, **kwargs):
        if str(path) == photos[1]:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageLoadError) as error:
        featurizer().fit_transform(photos)
    message = str(error.value)
    assert "permission denied" in message and "corrupt" not in message
    assert repr(photos[1]) in message


def test_closed_pil_image_reason_says_so(photos):
    image = Image.open(photos[0])
    image.close()
    with pytest.raises(ImageLoadError, match="file was closed"):
        featurizer().fit_transform([image])


@pytest.mark.parametrize(
    "empty", [[], (), np.array([], dtype=object)], ids=["list", "tuple", "object array"]
)
def test_every_empty_input_is_refused_alike(empty):
    with pytest.raises(ValueError, match="X is empty"):
        featurizer().fit_transform(empty)


def test_decoding_threads_leave_the_warning_filters_alone(tmp_path, monkeypatch):
    paths = []
    for i in range(8):
        path = tmp_path / f"big{i}.png"
        Image.new("RGB", (40, 40), (i, i, i)).save(path)
        paths.append(str(path))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: refused
    before = list(warnings.filters)
    for _ in range(8):
        threads = [
            threading.Thread(target=_expect_refusal, args=(paths,)) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert warnings.filters == before


def _expect_refusal(paths):
    for path in paths:
        try:
            load_image(path)
        except ValueError as exc:
            assert "decompression bomb" in str(exc)
        else:  # pragma: no cover - the assertion is the test
            raise AssertionError(f"{path} was decoded")


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
