import os

# No model hub is reachable in CI: fail downloads at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sklearn_clip import TINY_MODEL  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FEATURES = SHARED_DATA / "features" / "clip-vit-b32"
IMAGES = SHARED_DATA / "images"

#: Keyword arguments giving the tiny random-weight CLIP on CPU.
TINY = dict(model=TINY_MODEL, pretrained=None, device="cpu")


def hashed_class_text(classes, n_features):
    """Deterministic stand-in text encoder: one pseudo-random unit vector per
    label, seeded by the label itself, of any width. Lets the text-based
    estimators fit on unnamed labels of any feature width (the estimator
    checks); the same label always gets the same vector, in any process."""
    rows = []
    for label in classes:
        seed = zlib.crc32(repr(label).encode())
        rows.append(np.random.default_rng(seed).normal(size=n_features))
    text = np.asarray(rows)
    return text / np.linalg.norm(text, axis=1, keepdims=True)


def _require(path):
    if not path.exists():
        pytest.skip(
            f"real data not found at {path}: these tests need the project's "
            "../shared/data folder beside the repository"
        )
    return path


@pytest.fixture(scope="session")
def load_features():
    """Load a real CLIP features set from ../shared/data as float32 arrays."""

    def load(name):
        with np.load(_require(FEATURES / f"{name}.npz")) as data:
            return {
                key: data[key].astype(np.float32) if key.startswith(("X_", "text"))
                else data[key]
                for key in data.files
                if key != "meta"
            }

    return load


@pytest.fixture(scope="session")
def photo_set():
    """Rows of labels.csv of a real photo set: (absolute path, label, split)."""
    import csv

    def load(name):
        root = _require(IMAGES / name)
        with open(root / "labels.csv", newline="") as handle:
            return [
                (str(root / row["path"]), row["classname"], row["split"])
                for row in csv.DictReader(handle)
            ]

    return load
