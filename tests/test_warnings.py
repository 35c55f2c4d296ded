"""Warnings stay correct under threads: no fit changes the process's warning
filters, and the model-mismatch guard keeps firing."""

import warnings

import numpy as np
import pytest
from joblib import Parallel, delayed, parallel_config

from sklearn_clip import (
    CLIPClassifier,
    CLIPModelMismatchWarning,
    LinearProbeClassifier,
    ZeroShotClassifier,
)


@pytest.fixture(scope="module")
def cars(load_features):
    cars = load_features("stanford_cars")
    rows = np.flatnonzero(cars["y_train"] < 12)
    return cars["X_train"][rows], cars["y_train"][rows], cars["text_features"][:12]


def _random_text(n_classes, seed=1):
    text = np.random.default_rng(seed).normal(size=(n_classes, 512))
    return text / np.linalg.norm(text, axis=1, keepdims=True)


def _mismatch_warnings(record):
    return [w for w in record if issubclass(w.category, CLIPModelMismatchWarning)]


def test_a_threaded_fit_leaves_the_filters_and_the_guard_alone(cars):
    X, y, text = cars
    with warnings.catch_warnings():  # the test's own scope, in the main thread
        before = list(warnings.filters)
        for _ in range(3):
            CLIPClassifier(text_features=text, n_jobs=2, random_state=0).fit(X, y)
        assert warnings.filters == before
        warnings.simplefilter("always")  # count every warning below
        with warnings.catch_warnings(record=True) as record:
            ZeroShotClassifier(text_features=_random_text(12)).fit(X, y)
    assert len(_mismatch_warnings(record)) == 1


def test_mismatched_text_is_reported_once_by_the_classifier_not_per_member(cars):
    X, y, _ = cars
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        CLIPClassifier(text_features=_random_text(12), n_jobs=2, random_state=0).fit(
            X, y
        )
    assert len(_mismatch_warnings(record)) == 1


def test_heads_in_joblib_threads_leave_the_filters_alone():
    # One sample per class with many classes: scikit-learn's label check
    # would warn "could represent a regression" (the heads do not).
    X = np.random.default_rng(0).normal(size=(40, 8))
    y = np.arange(40) % 30
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        with parallel_config(backend="threading", n_jobs=2):
            Parallel()(
                delayed(LinearProbeClassifier(device="cpu").fit)(X, y) for _ in range(6)
            )
        assert warnings.filters == before
    assert not [w for w in record if "regression" in str(w.message)]
