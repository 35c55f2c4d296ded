"""The ecosystem's conformal tools (MAPIE 1.x, crepes) and scikit-learn's
cross-validation with every classifier: folds that lack classes, prefit
split conformal, class-conditional calibration, inside a pipeline.
"""

import inspect
import warnings

import numpy as np
import pytest
from sklearn.model_selection import KFold, cross_val_predict, cross_val_score

from sklearn_clip import (
    CLIPClassifier,
    TipAdapterClassifier,
    TransCLIPClassifier,
    ZeroShotClassifier,
    all_estimators,
    make_clip_pipeline,
)

from .conftest import TINY, cars_first_classes

mapie_classification = pytest.importorskip("mapie.classification")
crepes = pytest.importorskip("crepes")

N_CLASSES = 12  # the first classes of stanford_cars: a few seconds per tool
FAST_CANDIDATES = ["zero-shot", "Tip-Adapter", "GDA + zero-shot"]


def _text_estimators():
    """(name, estimator) of every classifier on embeddings that takes class text."""
    found = []
    for name, cls in all_estimators("classifier"):
        params = inspect.signature(cls).parameters
        if "text_features" in params and name != "VisualPromptClassifier":
            found.append(name)
    return found


def _make(name, text):
    """An estimator of every kind on real features, with class text where it
    takes some (a dict label -> embedding: folds may lack classes)."""
    cls = dict(all_estimators("classifier"))[name]
    params = inspect.signature(cls).parameters
    kwargs = {}
    if "text_features" in params:
        kwargs["text_features"] = text
    if "device" in params:
        kwargs["device"] = "cpu"
    if "random_state" in params:
        kwargs["random_state"] = 0
    if name == "CLIPClassifier":
        kwargs["candidates"] = FAST_CANDIDATES  # the choice and blend, in seconds
    if name == "TransCLIPClassifier":
        kwargs = {"estimator": TipAdapterClassifier(text_features=text)}
    return cls(**kwargs)


@pytest.fixture(scope="module")
def cars_subset(cars_data):
    """4 shots of the first classes of stanford_cars, their test images, and
    the class text of all 196 classes as a dict."""
    return cars_first_classes(cars_data, N_CLASSES, n_shots=4)


def test_text_dict_keeps_the_rows_of_the_classes_seen(cars_subset):
    X, y, X_test, _, text = cars_subset
    rows = np.stack([text[c] for c in range(N_CLASSES)])
    from_array = ZeroShotClassifier(text_features=rows).fit(X, y)
    from_dict = ZeroShotClassifier(text_features=text).fit(X, y)
    np.testing.assert_array_equal(
        from_array.predict_proba(X_test), from_dict.predict_proba(X_test)
    )
    # A fold without class 3: the rows of the other classes, in their order.
    lacking = y != 3
    fold = ZeroShotClassifier(text_features=text).fit(X[lacking], y[lacking])
    assert 3 not in fold.classes_
    np.testing.assert_array_equal(
        fold.text_features_, np.delete(rows, 3, axis=0).astype(np.float32)
    )


def test_array_text_on_a_fold_lacking_a_class_names_the_dict(cars_subset):
    X, y, _, _, text = cars_subset
    rows = np.stack([text[c] for c in range(N_CLASSES)])
    lacking = y != 3
    with pytest.raises(ValueError, match=r"dict label -> embedding"):
        ZeroShotClassifier(text_features=rows).fit(X[lacking], y[lacking])
    with pytest.raises(ValueError, match=r"no entry for labels \[5\]"):
        ZeroShotClassifier(text_features={k: v for k, v in text.items() if k != 5}).fit(
            X, y
        )
    with pytest.raises(ValueError, match=r"shape \(512,\)"):
        ZeroShotClassifier(text_features={c: np.ones(3) for c in range(196)}).fit(X, y)


@pytest.mark.parametrize("name", _text_estimators())
def test_kfold_cross_validation_with_folds_lacking_classes(cars_subset, name):
    """A plain KFold leaves classes out of training folds (2 shots: every
    fold lacks some); scikit-learn pads the missing probability columns."""
    X, y, _, _, text = cars_subset
    X, y = X[::2], y[::2]
    folds = KFold(4, shuffle=True, random_state=0)
    assert any(len(np.unique(y[train])) < N_CLASSES for train, _ in folds.split(X))
    with warnings.catch_warnings():
        # few-sample warnings; scikit-learn's on folds lacking classes
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = cross_val_score(_make(name, text), X, y, cv=folds, error_score="raise")
        proba = cross_val_predict(
            _make(name, text), X, y, cv=folds, method="predict_proba"
        )
    # 10 images per fold; zero-shot scores ~60 % on these classes, chance 5 %
    assert scores.mean() > 0.3 and scores.min() >= 0.1, scores
    assert proba.shape == (len(y), N_CLASSES)
    # Each row's predicted class is its fold estimator's, in the right column.
    assert np.mean(proba.argmax(axis=1) == y) > 0.3


@pytest.mark.parametrize(
    "name",
    [n for n, _ in all_estimators("classifier") if n != "VisualPromptClassifier"],
)
def test_mapie_and_crepes_with_every_classifier(cars_subset, name):
    X, y, X_test, y_test, text = cars_subset
    rows = np.arange(len(y_test))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # Cross-conformal over the shots: MAPIE's KFold leaves classes out.
        cross = mapie_classification.CrossConformalClassifier(
            _make(name, text), confidence_level=0.9, cv=4, random_state=0
        ).fit_conformalize(X, y)
        _, cross_sets = cross.predict_set(X_test)
        # Split conformal on a prefit estimator: half the shots calibrate.
        fitted = _make(name, text).fit(X[::2], y[::2])
        split = mapie_classification.SplitConformalClassifier(
            fitted, confidence_level=0.9, prefit=True
        ).conformalize(X[1::2], y[1::2])
        _, split_sets = split.predict_set(X_test)
        # crepes, class-conditional (2 calibration images per class: the
        # sets may not exclude a class at 90 %, they must still be sets).
        wrapped = crepes.WrapClassifier(_make(name, text))
        wrapped.fit(X[::2], y[::2])
        wrapped.calibrate(X[1::2], y[1::2], class_cond=True)
        crepes_sets = wrapped.predict_set(X_test, confidence=0.9, labels=False)
    assert cross_sets.shape == (len(y_test), N_CLASSES, 1)
    coverage = cross_sets[rows, y_test, 0].mean()
    size = cross_sets[:, :, 0].sum(axis=1).mean()
    assert coverage >= 0.85 and size < N_CLASSES / 2, (coverage, size)
    assert split_sets[rows, y_test, 0].mean() >= 0.8
    assert crepes_sets.shape == (len(y_test), N_CLASSES)
    assert crepes_sets[rows, y_test].mean() >= 0.8
    assert wrapped.predict(X_test).shape == y_test.shape


@pytest.fixture(scope="module")
def tiny_images():
    """24 random images of three classes, sorted by label so that MAPIE's
    KFold leaves classes out (the tiny model predicts nothing real: these
    check the plumbing)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    return images, np.repeat([0, 1, 2], 8)


# MAPIE fits its cross-validation members on labels it encoded as 0 .. n - 1
# (and its final estimator on the labels given): integer labels 0 .. n - 1
# with class_names as a dict keep the class text the same in both.
NAMES = {0: "ant", 1: "bee", 2: "wasp"}


@pytest.mark.parametrize(
    "head",
    [
        CLIPClassifier(candidates=FAST_CANDIDATES, class_names=NAMES, random_state=0),
        TransCLIPClassifier(ZeroShotClassifier(class_names=NAMES)),
        ZeroShotClassifier(class_names=NAMES),
    ],
    ids=["CLIPClassifier", "TransCLIPClassifier", "ZeroShotClassifier"],
)
def test_conformal_tools_on_a_pipeline_with_the_featurizer(tiny_images, head):
    images, labels = tiny_images
    if isinstance(head, TransCLIPClassifier):
        head.set_params(estimator__model=TINY["model"], estimator__pretrained=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights
        pipe = make_clip_pipeline(head, **TINY, batch_size=8)
        cross = mapie_classification.CrossConformalClassifier(
            pipe, confidence_level=0.8, cv=3
        ).fit_conformalize(images, labels)
        _, sets = cross.predict_set(images[:5])
        prefit = make_clip_pipeline(head, **TINY).fit(images[::2], labels[::2])
        split = mapie_classification.SplitConformalClassifier(
            prefit, confidence_level=0.8, prefit=True
        ).conformalize(images[1::2], labels[1::2])
        _, split_sets = split.predict_set(images[:5])
        wrapped = crepes.WrapClassifier(make_clip_pipeline(head, **TINY))
        wrapped.fit(images[::2], labels[::2])
        wrapped.calibrate(images[1::2], labels[1::2])
        crepes_sets = wrapped.predict_set(images[:5], confidence=0.8, labels=False)
    assert sets.shape == split_sets.shape == (5, 3, 1)
    assert crepes_sets.shape == (5, 3)
    assert set(cross.predict(images[:5]).tolist()) <= {0, 1, 2}
