"""Transductive cross-conformal sets, and the refusal of class-conditional
coverage the labels cannot support."""

import warnings

import numpy as np
import pytest
from sklearn.semi_supervised import LabelSpreading

from sklearn_clip import (
    TipAdapterClassifier,
    TransCLIPClassifier,
    ZeroShotClassifier,
    check_class_conditional,
    few_shot_indices,
    transductive_conformal_sets,
)
from sklearn_clip._conformal import min_calibration_per_class

from .conftest import cars_first_classes

N_CLASSES = 20


def test_calibration_images_needed_per_class():
    assert [min_calibration_per_class(c) for c in (0.8, 0.9, 0.95)] == [4, 9, 19]
    check_class_conditional(np.repeat([0, 1], 9), 0.9)
    with pytest.raises(ValueError, match=r"at least 9 calibration images.*1 of 2"):
        check_class_conditional(np.r_[np.repeat(0, 9), np.repeat(1, 8)], 0.9)
    # A percentage by mistake is refused, not read as a tiny requirement.
    for confidence in (90, 1.0, 0.0):
        with pytest.raises(ValueError, match="confidence"):
            check_class_conditional(np.repeat([0, 1], 9), confidence)


def test_sets_cover_at_the_confidence_over_draws():
    """The p-values' formula: over many draws of labelled and test points
    (a transductive scorer fitted with the test points), the sets cover at
    about the confidence asked."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 5))
    coverage, sizes = [], []
    for draw in range(40):
        y = np.repeat(np.arange(4), 4)  # 4 shots
        y_test = rng.integers(0, 4, 30)
        X = centres[y] + 1.2 * rng.normal(size=(len(y), 5))
        X_test = centres[y_test] + 1.2 * rng.normal(size=(30, 5))
        sets, classes = transductive_conformal_sets(
            LabelSpreading(gamma=1.0), X, y, X_test, confidence=0.8, random_state=draw
        )
        coverage.append(sets[np.arange(30), y_test].mean())
        sizes.append(sets.sum(axis=1).mean())
    assert classes.tolist() == [0, 1, 2, 3]
    # 1,200 test points in 40 draws: the standard error is about 2 points;
    # cross-conformal sets are a little conservative (86 % measured).
    # (LabelSpreading's default kernel gives tied scores: more conservative.)
    assert 0.77 <= np.mean(coverage) <= 0.92, np.mean(coverage)
    assert 1.0 < np.mean(sizes) < 3.0, np.mean(sizes)


@pytest.fixture(scope="module")
def cars_draw(cars_data):
    return cars_first_classes(cars_data, N_CLASSES, n_shots=10)


def test_transductive_sets_on_real_features_and_per_class_refusal(cars_draw):
    X, y, X_test, y_test, text = cars_draw
    clf = TransCLIPClassifier(TipAdapterClassifier(text_features=text), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sets, classes = transductive_conformal_sets(
            clf, X, y, X_test, confidence=0.9, random_state=0
        )
        per_class, _ = transductive_conformal_sets(
            clf, X, y, X_test, confidence=0.9, class_conditional=True, random_state=0
        )
    rows = np.arange(len(y_test))
    assert classes.tolist() == list(range(N_CLASSES))
    coverage, size = sets[rows, y_test].mean(), sets.sum(axis=1).mean()
    # 165 test images: one draw's coverage is within a few points of 90 %.
    assert 0.82 <= coverage <= 0.98 and size < 4, (coverage, size)
    assert per_class[rows, y_test].mean() >= 0.82
    # 4 shots cannot support per-class coverage at 90 %: refused by name.
    four = few_shot_indices(y, 4, random_state=0)
    with pytest.raises(ValueError, match="at least 9 calibration images per class"):
        transductive_conformal_sets(
            clf, X[four], y[four], X_test, class_conditional=True
        )


def test_string_labels_and_refused_inputs(cars_draw):
    X, y, X_test, _, text = cars_draw
    names = np.array([f"car {c:02d}" for c in range(N_CLASSES)])
    clf = TransCLIPClassifier(
        ZeroShotClassifier(text_features=dict(zip(names, text.values())))
    )
    sets, classes = transductive_conformal_sets(clf, X, names[y], X_test[:7], cv=2)
    assert sets.shape == (7, N_CLASSES) and classes[0] == "car 00"
    with pytest.raises(ValueError, match="at least 2 labelled images"):
        one_of_class_0 = np.r_[np.flatnonzero(y == 0)[:1], np.flatnonzero(y != 0)]
        transductive_conformal_sets(
            clf, X[one_of_class_0], names[y[one_of_class_0]], X_test
        )
    with pytest.raises(ValueError, match="marker of unlabelled rows"):
        transductive_conformal_sets(clf, X, np.where(y == 0, "-1", names[y]), X_test)
