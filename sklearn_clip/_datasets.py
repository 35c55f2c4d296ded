"""Reading the real CLIP features the tests, the benchmarks and the
examples use (the ``.npz`` format of ``../shared/data``).
"""

from pathlib import Path

import numpy as np


def load_features(path):
    """Load a features ``.npz`` in the ``../shared/data`` format.

    Returns a dict with float32 ``X_train``, ``X_test`` (and ``X_val`` when
    present), labels ``y_train``, ``y_test`` (``y_val``), ``text_features``
    (float32, or None) and ``name``. The one loader of the package, its tests,
    benchmarks and examples.
    """
    path = Path(path)
    with np.load(path) as data:
        missing = {"X_train", "y_train", "X_test", "y_test"} - set(data.files)
        if missing:
            raise ValueError(f"{path} lacks the arrays {sorted(missing)}")
        dataset = {key: data[key] for key in data.files if key != "meta"}
    for key in dataset:
        if key.startswith("X_") or key == "text_features":
            dataset[key] = dataset[key].astype(np.float32)
    dataset.setdefault("text_features", None)
    dataset["name"] = path.stem
    return dataset
