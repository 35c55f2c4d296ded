"""Parameter constraints and input checks shared by the estimators."""

import os
from numbers import Integral, Real

import numpy as np

from ._compat import Interval, StrOptions

DEVICE_CONSTRAINT = [str]
PRECISION_CONSTRAINT = [StrOptions({"auto", "fp32", "bf16", "fp16"})]
PRETRAINED_CONSTRAINT = [str, os.PathLike, None]
TEMPLATES_CONSTRAINT = [str, list, tuple]
CLASS_NAMES_CONSTRAINT = [dict, list, tuple, None]
TEXT_FEATURES_CONSTRAINT = ["array-like", dict, callable, None]

#: Parameters of every estimator whose classifier comes from class text.
TEXT_PARAMETER_CONSTRAINTS = {
    "model": [str],
    "pretrained": PRETRAINED_CONSTRAINT,
    "templates": TEMPLATES_CONSTRAINT,
    "class_names": CLASS_NAMES_CONSTRAINT,
    "text_features": TEXT_FEATURES_CONSTRAINT,
    "logit_scale": [Interval(Real, 0, None, closed="neither"), None],
    "device": DEVICE_CONSTRAINT,
    "precision": PRECISION_CONSTRAINT,
}


def check_text_features(text_features, classes, n_features):
    """Validate user-given class text embeddings for ``classes`` and
    L2-normalise the rows.

    ``text_features`` is an array with one row per class of ``classes`` in
    sorted-label order, or a dict ``label -> embedding`` holding at least
    ``classes``: the rows of ``classes`` are kept, so that an estimator fits
    on a cross-validation fold that lacks some classes.
    """
    n_classes = len(classes)
    if isinstance(text_features, dict):
        missing = [c for c in classes.tolist() if c not in text_features]
        if missing:
            raise ValueError(
                f"text_features has no entry for labels {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}."
            )
        rows = [np.asarray(text_features[c], dtype=np.float32) for c in classes]
        if any(row.shape != (n_features,) for row in rows):
            shapes = sorted({row.shape for row in rows})
            raise ValueError(
                f"text_features values must be embeddings of shape ({n_features},) "
                f"like X's rows; got shapes {shapes[:5]}."
            )
        text_features = np.stack(rows)
    text_features = np.asarray(text_features, dtype=np.float32)
    if text_features.shape != (n_classes, n_features):
        hint = ""
        if text_features.ndim == 2 and text_features.shape[0] > n_classes:
            hint = (
                " y lacks some classes the text has (a cross-validation fold, "
                "MAPIE's cross-conformal): pass text_features as a dict label -> "
                "embedding, e.g. dict(zip(all_labels, text_features)); the "
                "estimator then keeps the rows of the classes it sees."
            )
        raise ValueError(
            f"text_features must have shape (n_classes, n_features) = "
            f"({n_classes}, {n_features}) with rows in classes_ order, got "
            f"{text_features.shape}.{hint}"
        )
    if not np.all(np.isfinite(text_features)):
        raise ValueError("text_features contains NaN or infinite values.")
    norms = np.linalg.norm(text_features, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("text_features has an all-zero row.")
    # Rows that are unit-norm up to storage rounding (float16 files) are kept
    # as given, so results match computations on the stored features.
    off = np.abs(norms - 1.0) > 1e-3
    return np.where(off, text_features / norms, text_features)


#: Parameters of every estimator trained with skorch.
TRAINING_PARAMETER_CONSTRAINTS = {
    "class_weight": [dict, StrOptions({"balanced"}), None],
    "solver": [StrOptions({"lbfgs", "adamw"})],
    "alpha": [Interval(Real, 0, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither"), None],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"full"})],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "warm_start": ["boolean"],
    "device": DEVICE_CONSTRAINT,
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}
