import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone

from sklearn_clip import CLIPFeaturizer, ImageLoadError

from .conftest import TINY


@pytest.fixture
def featurizer():
    return CLIPFeaturizer(**TINY, batch_size=4, progress=False)


def test_real_photos_mixed_input_types(featurizer, photo_set):
    rows = photo_set("hymenoptera")[:6]
    paths = [path for path, _, _ in rows]
    assert any(" " in p for p, _, _ in photo_set("hymenoptera"))  # the awkward name
    with Image.open(paths[1]) as im:
        pil = im.copy()
    mixed = [paths[0], pil, np.asarray(pil), Path(paths[3]), paths[4], paths[5]]
    embeddings = featurizer.fit_transform(mixed)
    assert embeddings.shape == (6, 64) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    by_path = featurizer.transform(paths[:4])
    # The same picture as path, PIL image, array and Path gives the same row.
    np.testing.assert_allclose(embeddings[1], by_path[1], atol=1e-5)
    np.testing.assert_allclose(embeddings[2], by_path[1], atol=1e-5)
    np.testing.assert_allclose(embeddings[3], by_path[3], atol=1e-5)
    # Different photos give different embeddings.
    assert not np.allclose(by_path[0], by_path[1], atol=1e-3)


def test_photo_with_space_in_name_and_small_images(featurizer, photo_set):
    spaced = [p for p, _, _ in photo_set("hymenoptera") if " " in p]
    cifar = [p for p, _, _ in photo_set("cifar10")[:5]]
    out = featurizer.fit_transform(spaced + cifar)
    assert out.shape == (len(spaced) + 5, 64) and np.isfinite(out).all()


def test_batch_size_and_workers_do_not_change_results(photo_set):
    paths = [p for p, _, _ in photo_set("cifar10")[:10]]
    reference = CLIPFeaturizer(**TINY, batch_size=10, progress=False).fit_transform(
        paths
    )
    other = CLIPFeaturizer(
        **TINY, batch_size=3, num_workers=2, progress=False
    ).fit_transform(paths)
    np.testing.assert_allclose(reference, other, atol=1e-5)


def test_normalize_false_keeps_raw_norms(featurizer):
    images = [np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)]
    raw = clone(featurizer).set_params(normalize=False).fit_transform(images)
    assert not np.isclose(np.linalg.norm(raw), 1.0)


def test_feature_names_and_set_output(featurizer):
    pd = pytest.importorskip("pandas")
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    featurizer.fit(images)
    names = featurizer.get_feature_names_out()
    assert len(names) == 64 and names[0] == "clipfeaturizer0"
    frame = featurizer.set_output(transform="pandas").fit_transform(images)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(names)


def test_every_bad_item_is_named_in_one_error(featurizer, tmp_path, monkeypatch):
    good = np.zeros((8, 8, 3), np.uint8)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    bomb = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(bomb)
    # Over twice Pillow's pixel limit is a decompression bomb.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    items = [
        good,
        str(tmp_path / "missing.jpg"),
        tmp_path,
        str(tmp_path / "empty.jpg"),
        str(tmp_path / "notes.txt"),
        np.full((4, 4, 3), np.nan),
        42,
        good,
        str(bomb),
    ]
    with pytest.raises(ImageLoadError) as info:
        featurizer.fit_transform(items)
    indices = [index for index, _, _ in info.value.failures]
    assert indices == [1, 2, 3, 4, 5, 6, 8]
    message = str(info.value)
    for needle in (
        "missing.jpg",
        "does not exist",
        "directory",
        "empty",
        "not an image",
        "NaN",
        "unsupported input type",
        "bomb",
    ):
        assert needle in message, needle


def test_single_string_is_rejected(featurizer):
    with pytest.raises(ValueError, match="single path"):
        featurizer.fit_transform("folder/")


def test_clone_and_pickle_hold_no_weights(featurizer):
    featurizer.fit([np.zeros((8, 8, 3), np.uint8)])
    assert len(pickle.dumps(featurizer)) < 2000
    assert clone(featurizer).get_params() == featurizer.get_params()
