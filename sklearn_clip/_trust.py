"""Whether predictions can be trusted: calibration error, reliability
diagrams and abstention ("predict or defer") curves of class probabilities.

scikit-learn's ``calibration_curve`` is for binary problems; these measure
the top-label probability of multiclass classifiers, as the few-shot
literature does (Guo et al., 2017).
"""

import numpy as np

#: Fractions of images kept in the abstention tables and curves.
KEPT_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def _top_label(y_true, proba, classes):
    """``(confidence, correct)`` of the most probable class of each row."""
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true)
    if proba.ndim != 2 or len(proba) != len(y_true):
        raise ValueError(
            f"proba must have shape (n_samples, n_classes) with n_samples = "
            f"{len(y_true)}; got {proba.shape}."
        )
    classes = np.arange(proba.shape[1]) if classes is None else np.asarray(classes)
    if len(classes) != proba.shape[1]:
        raise ValueError(
            f"classes has {len(classes)} entries but proba has {proba.shape[1]} "
            "columns."
        )
    top = proba.argmax(axis=1)
    return proba[np.arange(len(proba)), top], classes[top] == y_true


def reliability_curve(y_true, proba, *, classes=None, n_bins=15):
    """Accuracy against confidence of the top label, in equal-width bins.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    proba : array-like of shape (n_samples, n_classes)
        Class probabilities, columns in ``classes`` order.
    classes : array-like of shape (n_classes,), default=None
        The labels of ``proba``'s columns (an estimator's ``classes_``);
        None means ``0 .. n_classes - 1``.
    n_bins : int, default=15
        Equal-width confidence bins on [0, 1].

    Returns
    -------
    confidence : ndarray of shape (n_bins,)
        Mean top-label probability of the images in each bin (NaN if empty).
    accuracy : ndarray of shape (n_bins,)
        Their accuracy (NaN if empty).
    count : ndarray of shape (n_bins,)
        Images per bin.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import reliability_curve
    >>> proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    >>> conf, acc, count = reliability_curve([0, 1, 1], proba, n_bins=2)
    >>> count.tolist(), acc.tolist()
    ([0, 3], [nan, 0.6666666666666666])
    """
    confidence, correct = _top_label(y_true, proba, classes)
    # Bin b holds confidences in (b / n_bins, (b + 1) / n_bins]; a
    # confidence of exactly 0 cannot be a top label's.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, confidence, n_bins) / count
        accuracy = np.bincount(bins, correct.astype(float), n_bins) / count
    return mean_confidence, accuracy, count


def expected_calibration_error(y_true, proba, *, classes=None, n_bins=15):
    """Expected calibration error of the top label (Guo et al., 2017).

    The mean over images of ``|accuracy - confidence|`` of their bin:
    0 when, among images predicted with probability p, a fraction p is
    right.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba : array-like of shape (n_samples, n_classes)
    classes : array-like of shape (n_classes,), default=None
        The labels of ``proba``'s columns; None means ``0 .. n_classes - 1``.
    n_bins : int, default=15

    Returns
    -------
    ece : float

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import expected_calibration_error
    >>> proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    >>> round(expected_calibration_error([0, 0, 1, 0], proba), 3)
    0.15
    """
    confidence, accuracy, count = reliability_curve(
        y_true, proba, classes=classes, n_bins=n_bins
    )
    filled = count > 0
    gaps = np.abs(accuracy[filled] - confidence[filled])
    return float(np.sum(gaps * count[filled]) / count.sum())


def abstention_curve(y_true, proba, *, classes=None, fractions=KEPT_FRACTIONS):
    """Accuracy on the images kept when the least confident ones are deferred.

    "Predict or defer": keep the fraction of images whose top-label
    probability is highest, send the rest to a person. A curve that rises
    as fewer images are kept means the probabilities rank errors well.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba : array-like of shape (n_samples, n_classes)
    classes : array-like of shape (n_classes,), default=None
        The labels of ``proba``'s columns; None means ``0 .. n_classes - 1``.
    fractions : sequence of float, default=KEPT_FRACTIONS
        Fractions of images kept, each in (0, 1].

    Returns
    -------
    accuracy : ndarray of shape (len(fractions),)
        Accuracy on the kept images at each fraction.
    threshold : ndarray of shape (len(fractions),)
        The lowest top-label probability kept at each fraction: the
        threshold that keeps that fraction of images like these.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import abstention_curve
    >>> proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    >>> accuracy, threshold = abstention_curve([0, 1, 1, 0], proba,
    ...                                         fractions=[1.0, 0.5])
    >>> accuracy.tolist(), threshold.tolist()
    ([0.75, 1.0], [0.55, 0.8])
    """
    confidence, correct = _top_label(y_true, proba, classes)
    fractions = np.asarray(fractions, dtype=np.float64)
    if np.any((fractions <= 0) | (fractions > 1)):
        raise ValueError(f"fractions must lie in (0, 1]; got {fractions.tolist()}.")
    # Most confident first; ties keep their order (stable).
    order = np.argsort(-confidence, kind="stable")
    kept = np.maximum(1, np.round(fractions * len(order)).astype(int))
    hits = np.cumsum(correct[order])
    return hits[kept - 1] / kept, confidence[order][kept - 1]


def log_loss_of(y_true, proba, classes):
    """Mean negative log-probability of the true class (probabilities
    clipped at 1e-15 as scikit-learn's ``log_loss`` does; a label missing
    from ``classes`` counts as probability 1e-15).
    """
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes)
    index = {c: i for i, c in enumerate(classes.tolist())}
    columns = np.array([index.get(c, -1) for c in np.asarray(y_true).tolist()])
    p = np.where(
        columns >= 0, proba[np.arange(len(proba)), np.maximum(columns, 0)], 0.0
    )
    return float(-np.mean(np.log(np.clip(p, 1e-15, 1.0))))
