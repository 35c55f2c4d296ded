import os

# No model hub is reachable in CI: fail downloads at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sklearn_clip import TINY_MODEL  # noqa: E402

#: tests/data holds stored estimators and the script that wrote them, not tests.
collect_ignore = ["data"]

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


def blobs(n_samples, n_classes=3, n_features=16, seed=0):
    """Well-separated Gaussian blobs: ``(X float32, y)``, labels 0, 1, 2, ..."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % n_classes
    centres = rng.normal(size=(n_classes, n_features))
    X = centres[y] + 0.3 * rng.normal(size=(n_samples, n_features))
    return X.astype(np.float32), y


def _require(path):
    if not path.exists():
        message = (
            f"real data not found at {path}: these tests need the project's "
            "../shared/data folder beside the repository"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: a missing data folder fails the run)")
        pytest.skip(message)
    return path


def pytest_configure(config):
    # A summary section: how long the clusters, the kernel reruns and the
    # other slow tests took, and the machine's load meanwhile.
    from ._phase_timing import PhaseTimer

    if not config.pluginmanager.has_plugin("phase-timing"):
        config.pluginmanager.register(PhaseTimer(), "phase-timing")


def pytest_collection_modifyitems(items):
    # needs_data: every test that reads ../shared/data (deselect with
    # -m "not needs_data" on a machine without it).
    for item in items:
        if {"load_features", "photo_set", "cars_data", "cars_shots"} & set(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.needs_data)


@pytest.fixture(scope="session")
def load_features():
    """Load a real CLIP features set from ../shared/data as float32 arrays."""

    from sklearn_clip._datasets import load_features

    def load(name):
        return load_features(_require(FEATURES / f"{name}.npz"))

    return load


@pytest.fixture(scope="session")
def cars_data(load_features):
    """The real stanford_cars features, as load_features returns them."""
    return load_features("stanford_cars")


@pytest.fixture(scope="session")
def cars_shots(cars_data):
    """``(shots, X_test, y_test, text)`` of stanford_cars: ``shots(n, seed)``
    draws ``(X, y)`` with ``n`` training images per class."""
    from sklearn_clip import few_shot_indices

    def shots(n, seed=0):
        train = few_shot_indices(cars_data["y_train"], n, random_state=seed)
        return cars_data["X_train"][train], cars_data["y_train"][train]

    return shots, cars_data["X_test"], cars_data["y_test"], cars_data["text_features"]


def cars_first_classes(cars_data, n_classes, n_shots):
    """``(X, y, X_test, y_test, text)``: ``n_shots`` per class drawn from the
    training pool of stanford_cars' first ``n_classes`` classes, their test
    images, and the class text of all 196 classes as a dict label -> row."""
    from sklearn_clip import few_shot_indices

    keep = cars_data["y_train"] < n_classes
    X_pool, y_pool = cars_data["X_train"][keep], cars_data["y_train"][keep]
    train = few_shot_indices(y_pool, n_shots, random_state=0)
    test = cars_data["y_test"] < n_classes
    text = dict(enumerate(cars_data["text_features"]))
    return (
        X_pool[train],
        y_pool[train],
        cars_data["X_test"][test],
        cars_data["y_test"][test],
        text,
    )


def zero_shot_accuracy(text, X, y, X_test, y_test):
    """Test accuracy of zero-shot CLIP with class text ``text``."""
    from sklearn_clip import ZeroShotClassifier

    return ZeroShotClassifier(text_features=text).fit(X, y).score(X_test, y_test)


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


_FRESH_PROCESS_CHECK = """
import json, sys, warnings
import numpy as np
warnings.simplefilter("error", category=UserWarning)  # no device/version warnings
warnings.filterwarnings("ignore", message="pretrained=None")
import sklearn_clip
for case in json.loads(sys.argv[1]):
    if case["format"] == "skops":
        import skops.io
        model = skops.io.load(case["model"], trusted=sklearn_clip.SKOPS_TRUSTED_TYPES)
    else:
        import joblib
        model = joblib.load(case["model"])
    X = np.load(case["X"], allow_pickle=True)
    got = getattr(model, case["method"])(list(X) if X.dtype == object else X)
    np.testing.assert_array_equal(got, np.load(case["expected"], allow_pickle=True),
                                  err_msg=case["model"])
"""


def assert_same_outputs_in_fresh_process(cases, directory, file_format="joblib"):
    """Store each fitted ``(estimator, X, method)`` with ``file_format``
    ("joblib" or "skops"), load all of them in one new Python process and
    assert that ``method(X)`` there equals the output here, bit for bit.
    Returns the stored files' sizes in bytes."""
    import json
    import subprocess
    import sys

    import joblib

    records, sizes = [], []
    for i, (estimator, X, method) in enumerate(cases):
        path = Path(directory) / f"model-{i}.{file_format}"
        if file_format == "skops":
            import skops.io

            skops.io.dump(estimator, path)
        else:
            joblib.dump(estimator, path)
        sizes.append(path.stat().st_size)
        X_array = np.asarray(X, dtype=object) if isinstance(X, list) else np.asarray(X)
        np.save(Path(directory) / f"X-{i}.npy", X_array, allow_pickle=True)
        np.save(
            Path(directory) / f"expected-{i}.npy",
            getattr(estimator, method)(X),
            allow_pickle=True,
        )
        records.append(
            dict(
                model=str(path),
                X=str(Path(directory) / f"X-{i}.npy"),
                expected=str(Path(directory) / f"expected-{i}.npy"),
                method=method,
                format=file_format,
            )
        )
    subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS_CHECK, json.dumps(records)], check=True
    )
    return sizes
