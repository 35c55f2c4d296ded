"""Exact image decoding and clear errors (_images): palettes, 16-bit images,
unreadable files and empty inputs, decoding threads."""

import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from sklearn_clip import CLIPFeaturizer, ImageLoadError, load_image

from .conftest import TINY


def featurizer(cache_dir=None, **params):
    return CLIPFeaturizer(
        **TINY, batch_size=4, num_workers=0, cache_dir=cache_dir, **params
    )


@pytest.fixture
def photos(photo_set):
    return [path for path, _, _ in photo_set("cifar10")[:6]]


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


def _expect_refusal(paths):
    for path in paths:
        try:
            load_image(path)
        except ValueError as exc:
            assert "decompression bomb" in str(exc)
        else:  # pragma: no cover - the assertion is the test
            raise AssertionError(f"{path} was decoded")


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
