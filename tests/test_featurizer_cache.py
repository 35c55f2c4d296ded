"""CLIPFeaturizer: the persistent embedding cache, error policy, out-of-memory
back-off and memory-mapped output."""

import shutil
import sqlite3
import warnings

import joblib
import numpy as np
import pytest
import torch
from PIL import Image

from sklearn_clip import CLIPFeaturizer, ImageLoadError, load_clip

from .conftest import TINY


@pytest.fixture
def photos(photo_set, tmp_path):
    """12 real JPEGs copied to a scratch folder (tests rename and overwrite)."""
    rows = photo_set("hymenoptera")[:12]
    paths = []
    for i, (path, _, _) in enumerate(rows):
        target = tmp_path / "photos" / f"{i:02d}.jpg"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(path, target)
        paths.append(str(target))
    return paths


@pytest.fixture
def count_forwards(monkeypatch):
    """Count images passed through the tiny model's image encoder."""
    model = load_clip(**TINY).model
    original = model.encode_image
    seen = {"images": 0, "fail_after": None}

    def counting(images, *args, **kwargs):
        if seen["fail_after"] is not None and seen["images"] >= seen["fail_after"]:
            raise KeyboardInterrupt("simulated Ctrl-C")
        seen["images"] += len(images)
        return original(images, *args, **kwargs)

    monkeypatch.setattr(model, "encode_image", counting)
    return seen


def make(tmp_path, **params):
    return CLIPFeaturizer(
        **TINY, batch_size=4, num_workers=0, cache_dir=tmp_path / "cache", **params
    )


def test_warm_run_is_served_from_the_cache(photos, tmp_path, count_forwards):
    cold = make(tmp_path).fit_transform(photos)
    assert count_forwards["images"] == len(photos)
    warm = make(tmp_path).fit_transform(photos)
    assert count_forwards["images"] == len(photos)  # no new forward pass
    np.testing.assert_array_equal(cold, warm)
    uncached = CLIPFeaturizer(**TINY).fit_transform(photos)
    np.testing.assert_allclose(cold, uncached, atol=1e-6)


def test_content_not_path_is_the_key(photos, tmp_path, count_forwards):
    featurizer = make(tmp_path)
    before = featurizer.fit_transform(photos)
    # Renamed: served from the cache.
    renamed = [p.replace(".jpg", "-renamed.jpg") for p in photos[:3]]
    for old, new in zip(photos, renamed):
        shutil.move(old, new)
    calls = count_forwards["images"]
    np.testing.assert_array_equal(featurizer.transform(renamed), before[:3])
    assert count_forwards["images"] == calls
    # Overwritten with another image: embedded again, with the new content.
    shutil.copy(photos[5], renamed[0])
    again = featurizer.transform(renamed[:1])
    assert count_forwards["images"] == calls  # same content as photos[5]: cached
    np.testing.assert_array_equal(again[0], before[5])
    Image.new("RGB", (40, 30), (200, 10, 10)).save(renamed[1], "JPEG")
    fresh = featurizer.transform(renamed[1:2])
    assert count_forwards["images"] == calls + 1
    assert not np.allclose(fresh[0], before[1])


def test_other_settings_do_not_share_entries(photos, tmp_path, count_forwards):
    make(tmp_path).fit_transform(photos[:4])
    make(tmp_path, normalize=False).fit_transform(photos[:4])
    assert count_forwards["images"] == 8


def test_interrupted_run_resumes_without_partial_rows(photos, tmp_path, count_forwards):
    count_forwards["fail_after"] = 8  # two batches of 4 finish, then Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path).fit_transform(photos)
    with sqlite3.connect(tmp_path / "cache" / "embeddings.sqlite") as db:
        (stored,) = db.execute("SELECT COUNT(*) FROM checked_embeddings").fetchone()
    assert stored == 8
    count_forwards["fail_after"] = None
    resumed = make(tmp_path).fit_transform(photos)
    assert count_forwards["images"] == len(photos)  # 8 before + only the 4 missing
    np.testing.assert_allclose(
        resumed, CLIPFeaturizer(**TINY).fit_transform(photos), atol=1e-6
    )


def test_rows_of_the_wrong_length_are_never_returned(photos, tmp_path, count_forwards):
    expected = make(tmp_path).fit_transform(photos[:2])
    with sqlite3.connect(tmp_path / "cache" / "embeddings.sqlite") as db:
        db.execute("UPDATE checked_embeddings SET vector = ?", [b"\x00" * 12])
    again = make(tmp_path).fit_transform(photos[:2])
    assert count_forwards["images"] == 4
    np.testing.assert_array_equal(again, expected)


def _embed_part(cache_dir, paths):
    warnings.simplefilter("ignore")
    return CLIPFeaturizer(
        **TINY, batch_size=2, num_workers=0, cache_dir=cache_dir
    ).fit_transform(paths)


def test_processes_write_one_cache_at_once(photos, tmp_path):
    cache_dir = str(tmp_path / "cache")
    halves = [photos[0::2], photos[1::2]]
    parts = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_embed_part)(cache_dir, half) for half in halves
    )
    with sqlite3.connect(tmp_path / "cache" / "embeddings.sqlite") as db:
        (stored,) = db.execute("SELECT COUNT(*) FROM checked_embeddings").fetchone()
    assert stored == len(photos)
    full = CLIPFeaturizer(**TINY, cache_dir=cache_dir).fit_transform(photos)
    np.testing.assert_array_equal(full[0::2], parts[0])
    np.testing.assert_array_equal(full[1::2], parts[1])


def test_repeated_inputs_are_embedded_once(photos, tmp_path, count_forwards):
    items = [
        photos[0],
        photos[1],
        photos[0],
        np.zeros((8, 8, 3), np.uint8),
        np.zeros((8, 8, 3), np.uint8),
    ]
    X = make(tmp_path).fit_transform(items)
    assert count_forwards["images"] == 3
    np.testing.assert_array_equal(X[0], X[2])
    np.testing.assert_array_equal(X[3], X[4])


def test_on_error_nan_keeps_rows_and_names_the_bad_items(photos, tmp_path):
    items = [
        photos[0],
        str(tmp_path / "missing.jpg"),
        photos[1],
        np.full((4, 4, 3), np.nan),
    ]
    with pytest.raises(ImageLoadError, match="2 of 4"):
        CLIPFeaturizer(**TINY).fit_transform(items)
    with pytest.warns(UserWarning, match="missing.jpg") as record:
        X = CLIPFeaturizer(**TINY, on_error="nan").fit_transform(items)
    assert "NaN or infinite" in str(record[0].message)
    assert X.shape == (4, 64)
    assert np.isnan(X[[1, 3]]).all() and np.isfinite(X[[0, 2]]).all()
    # With the cache too; the good rows are stored.
    with pytest.warns(UserWarning):
        cached = make(tmp_path, on_error="nan").fit_transform(items)
    np.testing.assert_allclose(cached, X, atol=1e-6)


def test_out_of_memory_halves_the_batch(photos, monkeypatch):
    model = load_clip(**TINY).model
    original = model.encode_image

    def small_memory(images, *args, **kwargs):
        if len(images) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(images, *args, **kwargs)

    expected = CLIPFeaturizer(**TINY).fit_transform(photos)
    monkeypatch.setattr(model, "encode_image", small_memory)
    with pytest.warns(RuntimeWarning, match="batches of"):
        X = CLIPFeaturizer(**TINY, batch_size=8).fit_transform(photos)
    np.testing.assert_allclose(X, expected, atol=1e-6)


def test_memmap_output(photos, tmp_path):
    X = CLIPFeaturizer(**TINY, memmap_dir=tmp_path / "out").fit_transform(photos)
    assert isinstance(X, np.memmap)
    files = list((tmp_path / "out").glob("*.npy"))
    assert len(files) == 1
    np.testing.assert_allclose(
        np.load(files[0]), CLIPFeaturizer(**TINY).fit_transform(photos), atol=1e-6
    )


@pytest.mark.parametrize(
    "item, reason",
    [
        (np.full((4, 4, 3), np.inf, np.float32), "NaN or infinite"),
        (np.full((4, 4, 3), 2.0), r"values in \[0, 1\]"),
        (np.zeros((0, 4, 3), np.uint8), "zero size"),
        (np.zeros((4, 4, 3), np.int64), "dtype int64"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
    ],
)
def test_bad_arrays_are_named(item, reason):
    with pytest.raises(ImageLoadError, match=reason):
        CLIPFeaturizer(**TINY).fit_transform([np.zeros((4, 4, 3), np.uint8), item])


def test_float_arrays_in_unit_range_are_images():
    image = np.random.default_rng(0).random((16, 16, 3))
    as_uint8 = (image * 255 + 0.5).astype(np.uint8)
    featurizer = CLIPFeaturizer(**TINY)
    np.testing.assert_array_equal(
        featurizer.fit_transform([image]), featurizer.transform([as_uint8])
    )


def test_image_over_the_pixel_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    Image.new("RGB", (40, 40)).save(path)
    # 1,600 pixels: over the limit but under twice it, where Pillow only warns.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        CLIPFeaturizer(**TINY).fit_transform([str(path)])


def test_int8_quantized_encoder_is_close_to_float(photos):
    exact = CLIPFeaturizer(**TINY).fit_transform(photos)
    quantized = CLIPFeaturizer(**TINY, quantize=True).fit_transform(photos)
    cosines = np.sum(exact * quantized, axis=1)
    assert cosines.min() > 0.99 and not np.array_equal(exact, quantized)
    # The shared float model is untouched.
    np.testing.assert_array_equal(CLIPFeaturizer(**TINY).fit_transform(photos), exact)
