"""Conformal prediction sets with unlabelled images (transductive
cross-conformal), and the rule for class-conditional coverage.

MAPIE and crepes cover split and cross-conformal prediction with any of the
package's classifiers; what they lack is scores fitted on the labelled and
the unlabelled images together, which stay valid when the images to
predict are among the unlabelled ones (Gazin et al., 2024).
"""

import math
from numbers import Integral, Real

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from sklearn.utils import check_random_state

from ._base import encode_labels
from ._compat import Interval, validate_params
from ._unlabelled import UNLABELLED, labelled_mask


def min_calibration_per_class(confidence):
    """Calibration images each class needs for class-conditional sets at
    ``confidence`` to ever leave that class out: ``ceil(1 / alpha) - 1``
    with ``alpha = 1 - confidence`` (9 at 90 %).

    With fewer, the smallest p-value of the class, ``1 / (n + 1)``, stays
    above ``alpha``: every set then holds the class, a valid but useless
    answer.
    """
    alpha = 1.0 - confidence
    return max(1, math.ceil(round(1.0 / alpha, 9)) - 1)


@validate_params(
    {
        "y_calibration": ["array-like"],
        "confidence": [Interval(Real, 0, 1, closed="neither")],
    },
    prefer_skip_nested_validation=True,
)
def check_class_conditional(y_calibration, confidence):
    """Refuse class-conditional coverage that the calibration labels cannot
    support (see :func:`min_calibration_per_class`).

    Call it before ``crepes``' ``calibrate(..., class_cond=True)`` or any
    per-class calibration.

    Parameters
    ----------
    y_calibration : array-like of shape (n_samples,)
        The labels of the calibration images.
    confidence : float in (0, 1)
        The coverage asked for in every class (0.9 for 90 %, not 90).

    Raises
    ------
    ValueError
        Naming the classes short of calibration images.
    """
    classes, counts = np.unique(np.asarray(y_calibration), return_counts=True)
    needed = min_calibration_per_class(confidence)
    short = classes[counts < needed]
    if len(short):
        raise ValueError(
            f"Class-conditional coverage at {confidence:.0%} needs at least "
            f"{needed} calibration images per class; {len(short)} of "
            f"{len(classes)} classes have fewer (e.g. {short[:5].tolist()}, "
            f"{counts.min()} at least). Ask for marginal coverage, a lower "
            "confidence, or label more images of these classes."
        )


@validate_params(
    {
        "estimator": [object],
        "X": ["array-like"],
        "y": ["array-like"],
        "X_test": ["array-like"],
        "confidence": [Interval(Real, 0, 1, closed="neither")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "class_conditional": ["boolean"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=False,
)
def transductive_conformal_sets(
    estimator,
    X,
    y,
    X_test,
    *,
    confidence=0.9,
    cv=4,
    class_conditional=False,
    random_state=None,
):
    """Prediction sets for ``X_test`` from cross-conformal scores fitted with
    the unlabelled images.

    The labelled images are split into ``cv`` stratified folds. For each
    fold, ``estimator`` is fitted on the other folds' labelled images plus,
    unlabelled (``-1``), the fold's images and ``X_test``: the fold's images
    and the test images play the same part in that fit, so the fold's scores
    calibrate the test images' (Gazin et al., 2024). The scores are ``1 -
    probability`` of a label (LAC); p-values pool the folds as
    cross-conformal prediction does (Vovk, 2015), and a set holds the labels
    whose p-value exceeds ``1 - confidence``.

    Parameters
    ----------
    estimator : classifier
        Fitted on partly unlabelled ``y`` (``-1`` marks unlabelled rows),
        e.g. :class:`TransCLIPClassifier`; it must have ``predict_proba``
        and ``classes_``.
    X : array-like of shape (n_samples, n_features)
        Labelled image embeddings (the shots).
    y : array-like of shape (n_samples,)
        Their labels.
    X_test : array-like of shape (n_test, n_features)
        The images to predict (unlabelled).
    confidence : float, default=0.9
        Target coverage.
    cv : int, default=4
        Folds of the labelled images, fewer when a class has fewer images
        (at least 2).
    class_conditional : bool, default=False
        Coverage within each class instead of on average; refused (a
        ``ValueError``) when a class has fewer labelled images than
        :func:`min_calibration_per_class` asks.
    random_state : int, RandomState instance or None, default=None
        Seeds the folds.

    Returns
    -------
    sets : ndarray of shape (n_test, n_classes), bool
        ``sets[i, j]``: label ``classes[j]`` is in the set of image ``i``.
    classes : ndarray of shape (n_classes,)
        The sorted labels of ``y``.

    Notes
    -----
    Cross-conformal sets cover at least ``1 - 2 * (1 - confidence)`` in
    theory and close to ``confidence`` in practice (Barber et al., 2021);
    the coverage is over draws of the labelled and test images together.

    References
    ----------
    .. [1] Gazin, Blanchard, Roquain, "Transductive conformal inference with
       adaptive scores", AISTATS 2024.
    .. [2] Vovk, "Cross-conformal predictors", Annals of Mathematics and
       Artificial Intelligence, 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import (TransCLIPClassifier, ZeroShotClassifier,
    ...                           transductive_conformal_sets)
    >>> rng = np.random.default_rng(0)
    >>> text = np.eye(3, 8)
    >>> X = np.repeat(text, 10, axis=0) + 0.3 * rng.normal(size=(30, 8))
    >>> y = np.repeat([0, 1, 2], 10)
    >>> X_test = np.repeat(text, 5, axis=0) + 0.3 * rng.normal(size=(15, 8))
    >>> clf = TransCLIPClassifier(ZeroShotClassifier(text_features=text))
    >>> sets, classes = transductive_conformal_sets(clf, X, y, X_test,
    ...                                             random_state=0)
    >>> sets.shape, classes.tolist()
    ((15, 3), [0, 1, 2])
    """
    X = np.asarray(X)
    X_test = np.asarray(X_test)
    classes, codes = encode_labels(y)
    counts = np.bincount(codes, minlength=len(classes))
    if class_conditional:
        check_class_conditional(np.asarray(y), confidence)
    if not labelled_mask(classes).all():
        raise ValueError("y contains the marker of unlabelled rows (-1 or '-1').")
    # The marker in the labels' own type: -1 among numbers, "-1" in strings.
    marker = str(UNLABELLED) if classes.dtype.kind in "UO" else UNLABELLED
    n_folds = min(cv, int(counts.min()))
    if n_folds < 2:
        raise ValueError(
            "Cross-conformal sets need at least 2 labelled images of every class "
            f"(class {classes[counts.argmin()]!r} has {counts.min()})."
        )
    folds = StratifiedKFold(
        n_folds, shuffle=True, random_state=check_random_state(random_state)
    ).split(X, codes)
    calibration = np.empty(len(codes))
    test_scores = []
    fold_of = np.empty(len(codes), dtype=int)
    for k, (train, held) in enumerate(folds):
        X_fit = np.vstack([X[train], X[held], X_test])
        y_fit = np.r_[classes[codes[train]], np.full(len(held) + len(X_test), marker)]
        fitted = clone(estimator).fit(X_fit, y_fit)
        proba = _proba_over(fitted, np.vstack([X[held], X_test]), classes)
        calibration[held] = 1.0 - proba[np.arange(len(held)), codes[held]]
        test_scores.append(1.0 - proba[len(held) :])
        fold_of[held] = k
    alpha = 1.0 - confidence
    # p(x, c) = (1 + #{labelled i: score_i >= score_{fold(i)}(x, c)}) / (n + 1),
    # within the class c only for class-conditional sets.
    exceed = np.zeros((len(X_test), len(classes)))
    for k, scores in enumerate(test_scores):
        if class_conditional:
            for c in range(len(classes)):
                cal = np.sort(calibration[(fold_of == k) & (codes == c)])
                exceed[:, c] += len(cal) - np.searchsorted(cal, scores[:, c], "left")
        else:
            cal = np.sort(calibration[fold_of == k])
            exceed += len(cal) - np.searchsorted(cal, scores, "left")
    n = counts[None, :] if class_conditional else len(codes)
    p_values = (1.0 + exceed) / (n + 1.0)
    return p_values > alpha, classes


def _proba_over(estimator, X, classes):
    """``predict_proba`` with one column per label of ``classes`` (0 for a
    class the fitted estimator lacks).
    """
    proba = estimator.predict_proba(X)
    out = np.zeros((len(X), len(classes)))
    columns = np.searchsorted(classes, estimator.classes_)
    out[:, columns] = proba
    return out
