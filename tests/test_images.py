import io

import numpy as np
import pytest
from PIL import Image

from sklearn_clip import ImageLoadError, load_image, load_image_folder
from sklearn_clip._images import check_image_inputs


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_modes_are_converted_to_rgb(tmp_path):
    rgb = Image.new("RGB", (8, 6), (200, 10, 30))
    grey = Image.new("L", (8, 6), 77)
    palette = rgb.convert("P")
    cmyk = _save(rgb.convert("CMYK"), tmp_path / "cmyk.jpg")
    for source in (rgb, grey, palette, cmyk):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (8, 6)
    assert load_image(grey).getpixel((0, 0)) == (77, 77, 77)


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path):
    values = np.full((4, 5), 32768, dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    assert load_image(path).getpixel((0, 0)) == (128, 128, 128)


def test_transparency_is_composited_on_white():
    rgba = np.zeros((3, 3, 4), dtype=np.uint8)  # fully transparent black
    rgba[0, 0] = (255, 0, 0, 255)
    image = load_image(rgba)
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert image.getpixel((2, 2)) == (255, 255, 255)


def test_exif_orientation_is_honoured(tmp_path):
    image = Image.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = _save(image, tmp_path / "rotated.jpg", exif=exif)
    assert load_image(path).size == (20, 40)


def test_arrays():
    assert load_image(np.zeros((5, 7), np.uint8)).size == (7, 5)
    assert load_image(np.zeros((5, 7, 1), np.uint8)).size == (7, 5)
    assert load_image(np.ones((5, 7, 3), np.float32)).getpixel((0, 0)) == (
        255,
        255,
        255,
    )
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((5, 7, 3), np.uint16))
    with pytest.raises(ValueError, match="NaN"):
        load_image(np.full((5, 7, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((5, 7, 2), np.uint8))


@pytest.mark.parametrize(
    "bad, message",
    [
        ("a/path.jpg", "single path"),
        (Image.new("RGB", (2, 2)), "wrap one image in a list"),
        ((p for p in ["a.jpg"]), "generators"),
        ([], "empty"),
        (np.zeros((4, 4, 3), np.uint8), "shape"),
    ],
)
def test_bad_containers(bad, message):
    with pytest.raises(ValueError, match=message):
        check_image_inputs(bad)


def test_uint8_stack_is_a_list_of_images():
    assert len(check_image_inputs(np.zeros((3, 4, 4, 3), np.uint8))) == 3


def test_error_message_lists_every_bad_item():
    failures = [(0, "'a.jpg'", "missing"), (3, "array", "bad dtype")]
    error = ImageLoadError(failures, 5)
    assert "2 of 5 inputs" in str(error)
    assert "[0] 'a.jpg': missing" in str(error) and "[3] array: bad dtype" in str(error)
    assert isinstance(error, ValueError) and error.failures == failures


def test_load_image_folder(tmp_path):
    for cls in ("bee", "ant"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / cls / "x.png")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    paths, labels = load_image_folder(tmp_path)
    assert labels == ["ant", "bee"]
    assert all(p.endswith("x.png") for p in paths)
    with pytest.raises(ValueError, match="not a directory"):
        load_image_folder(tmp_path / "missing")


def test_truncated_jpeg_is_reported(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(ValueError, match="truncated"):
        load_image(path)
