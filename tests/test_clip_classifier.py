"""CLIPClassifier: methods chosen or blended by cross-validation on the
training samples, on real CLIP features.
"""

import pickle
import warnings

import numpy as np
import pytest
from joblib import Parallel, delayed, parallel_config
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from sklearn_clip import CLIPClassifier, GDAClassifier, few_shot_indices
from sklearn_clip._clip_classifier import IMAGE_ONLY_CANDIDATES

pytestmark = pytest.mark.filterwarnings("ignore:.*could represent a regression")


def _subset(data, n_classes, shots, seed=0, split="train"):
    """The first ``n_classes`` classes, ``shots`` per class from the pool."""
    classes = np.unique(data["y_train"])[:n_classes]
    keep = np.isin(data["y_train"], classes)
    X, y = data["X_train"][keep], data["y_train"][keep]
    train = few_shot_indices(y, shots, random_state=seed)
    test = np.isin(data["y_test"], classes)
    text = None
    if data["text_features"] is not None:
        text = data["text_features"][
            np.searchsorted(np.unique(data["y_train"]), classes)
        ]
    return X[train], y[train], data["X_test"][test], data["y_test"][test], text


# Fast candidates, one of them trained: for tests about the machinery.
QUICK = ["zero-shot", "Tip-Adapter", "GDA + zero-shot", "ZS linear probe"]


@pytest.fixture(scope="module")
def cars(load_features):
    return _subset(load_features("stanford_cars"), 25, 4)


def test_with_text_is_as_good_as_its_best_candidate_on_real_features(load_features):
    # 50 classes: about 420 test images, so that two points are eight images
    # (with 25 classes, four: noise next to the best of eight candidates).
    X, y, X_test, y_test, text = _subset(load_features("stanford_cars"), 50, 4)
    clf = CLIPClassifier(text_features=text, random_state=0).fit(X, y)
    results = clf.cv_results_
    assert clf.selection_ == "cross-validation (2 folds)"  # auto, with text
    assert set(results["method"]) == set(clf.candidates_)
    assert abs(sum(clf.chosen_.values()) - 1) < 1e-12
    assert set(clf.chosen_) <= set(results["method"][results["weight"] > 0])
    # Every candidate on the test split, for reference only.
    singles = {
        name: clf.make_candidate(name, random_state=0).fit(X, y).score(X_test, y_test)
        for name in clf.candidates_
    }
    score = clf.score(X_test, y_test)
    assert score >= max(singles.values()) - 0.02, (score, singles)
    assert score > singles["zero-shot"]


def test_choice_uses_the_training_samples_only(cars):
    X, y, X_test, y_test, text = cars
    clf = CLIPClassifier(text_features=text, candidates=QUICK, random_state=0)
    clf.fit(X, y)
    chosen, table = dict(clf.chosen_), clf.cv_results_["val_accuracy"].copy()
    clf.score(X_test, y_test)  # scoring changes nothing
    assert clf.chosen_ == chosen
    np.testing.assert_array_equal(clf.cv_results_["val_accuracy"], table)
    # A fresh fit on the same training rows, with no test data anywhere,
    # makes the same choice with the same validation scores.
    again = clone(clf).fit(X, y)
    assert again.chosen_ == chosen
    np.testing.assert_array_equal(again.cv_results_["val_accuracy"], table)


def _fit_and_predict(X, y, X_test, text, n_jobs):
    clf = CLIPClassifier(text_features=text, random_state=3, n_jobs=n_jobs).fit(X, y)
    return clf.chosen_, clf.cv_results_["status"], clf.predict_proba(X_test)


def test_the_same_model_with_any_n_jobs_and_joblib_backend(cars):
    # Every candidate fit runs on one thread: n_jobs and the backend change
    # where the fits run, never the floats they produce.
    X, y, X_test, _, text = cars
    chosen, status, proba = _fit_and_predict(X, y, X_test, text, None)
    runs = [_fit_and_predict(X, y, X_test, text, n_jobs) for n_jobs in (1, 2)]
    for backend in ("threading", "loky"):
        with parallel_config(backend=backend, n_jobs=2):
            runs += Parallel()(
                delayed(_fit_and_predict)(X, y, X_test, text, n_jobs)
                for n_jobs in (None, 2)
            )
    for other_chosen, other_status, other_proba in runs:
        assert other_chosen == chosen
        np.testing.assert_array_equal(other_status, status)
        np.testing.assert_array_equal(other_proba, proba)


def test_default_n_jobs_uses_torchs_thread_count_or_joblibs(monkeypatch):
    import torch

    from sklearn_clip._clip_classifier import _thread_count

    assert _thread_count(None) == torch.get_num_threads()
    assert _thread_count(3) == 3
    with parallel_config(n_jobs=4):
        assert _thread_count(None) is None  # joblib's context decides


def test_accuracy_keeps_the_simplest_candidate_within_one_standard_error():
    from sklearn_clip._clip_classifier import _one_standard_error_choice

    y = np.arange(400) % 4
    right, wrong = np.eye(4)[y], np.eye(4)[(y + 1) % 4]

    def wrong_on(rows):
        return np.where(np.isin(np.arange(400), rows)[:, None], wrong, right)

    # GDA is simpler than the linear probe. 20 % against 19 % errors on
    # different rows: a difference of 0.5 paired standard errors, noise.
    close = {"GDA": wrong_on(range(0, 80)), "linear probe": wrong_on(range(40, 116))}
    assert _one_standard_error_choice(close, y, list(close)) == "GDA"
    # 30 % against 10 %: ten standard errors.
    far = {"GDA": wrong_on(range(0, 120)), "linear probe": wrong_on(range(0, 40))}
    assert _one_standard_error_choice(far, y, list(far)) == "linear probe"


def test_image_only_data(load_features):
    X, y, X_test, y_test, _ = _subset(load_features("oxford_pets"), 37, 4)
    clf = CLIPClassifier(random_state=0).fit(X, y)
    assert clf.text_features_ is None
    assert clf.candidates_ == list(IMAGE_ONLY_CANDIDATES)
    assert clf.scoring_ == "accuracy"
    gda = GDAClassifier().fit(X, y).score(X_test, y_test)
    # Within two points of the best image-only method there (GDA).
    assert clf.score(X_test, y_test) >= gda - 0.02
    assert len(clf.chosen_) == 1  # accuracy keeps one candidate


def test_one_sample_per_class_uses_the_fixed_rule(load_features):
    X, y, X_test, y_test, text = _subset(load_features("stanford_cars"), 30, 1)
    with_text = CLIPClassifier(text_features=text, random_state=0).fit(X, y)
    assert with_text.selection_ == "rule (one sample in some class)"
    assert with_text.chosen_ == {"Tip-Adapter-F": 1.0}
    assert with_text.score(X_test, y_test) > 0.5
    without = CLIPClassifier(random_state=0).fit(X, y)
    assert without.chosen_ == {"linear probe": 1.0}
    # One class with a single sample is enough to need the rule.
    X2, y2, *_ = _subset(load_features("stanford_cars"), 30, 3)
    rows = np.r_[np.flatnonzero(y2 != y2[0]), np.flatnonzero(y2 == y2[0])[:1]]
    assert (
        CLIPClassifier(random_state=0)
        .fit(X2[rows], y2[rows])
        .selection_.startswith("rule")
    )
    with pytest.warns(UserWarning, match="ensemble has no effect"):
        CLIPClassifier(ensemble=False, random_state=0).fit(X, y)


def test_grid_search_and_pickle_round_trip(load_features, tmp_path):
    X, y, X_test, _, _ = _subset(load_features("oxford_flowers"), 20, 4)
    search = GridSearchCV(
        CLIPClassifier(random_state=0), {"ensemble": [True, False]}, cv=2, n_jobs=2
    ).fit(X, y)
    serial = GridSearchCV(
        CLIPClassifier(random_state=0), {"ensemble": [True, False]}, cv=2
    ).fit(X, y)
    assert search.best_params_ == serial.best_params_
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )
    clf = search.best_estimator_
    blob = pickle.dumps(clf)
    assert len(blob) < 2_000_000  # small arrays only, no CLIP model
    loaded = pickle.loads(blob)
    np.testing.assert_array_equal(loaded.predict(X_test), clf.predict(X_test))
    np.testing.assert_allclose(loaded.predict_proba(X_test), clf.predict_proba(X_test))


def test_open_vocabulary_only_when_every_chosen_method_is(cars):
    X, y, X_test, y_test, text = cars
    clf = CLIPClassifier(
        text_features=text, candidates=["zero-shot", "Tip-Adapter"], random_state=0
    ).fit(X, y)
    assert hasattr(clf, "with_classes")
    # Keep half the classes, in a new label order: predictions follow.
    classes = clf.classes_[::2]
    narrow = clf.with_classes(classes, text_features=text[::2])
    keep = np.isin(y_test, classes)
    assert narrow.score(X_test[keep], y_test[keep]) >= clf.score(X_test, y_test)
    gda = CLIPClassifier(
        text_features=text, candidates=["GDA + zero-shot"], random_state=0
    ).fit(X, y)
    assert not hasattr(gda, "with_classes")


def test_clear_errors():
    X = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = [0, 1] * 4
    with pytest.raises(ValueError, match="unknown method names \\['SVM'\\]"):
        CLIPClassifier(candidates=["GDA", "SVM"]).fit(X, y)
    with pytest.raises(ValueError, match="class_names"):
        CLIPClassifier(candidates="text").fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CLIPClassifier(random_state=0).fit(X, y)  # image-only: nothing unused
    with pytest.warns(UserWarning, match="templates has no effect"):
        CLIPClassifier(templates="imagenet", random_state=0).fit(X, y)


def test_make_candidate_builds_a_candidate_as_fit_does(cars):
    X, y, _, _, text = cars
    # Cheap candidates to fit; any candidate can be made.
    clf = CLIPClassifier(
        text_features=text, candidates=["zero-shot", "Tip-Adapter"], random_state=0
    )
    clf.fit(X, y)
    probe = clf.make_candidate("ZS linear probe", random_state=3)
    params = probe.get_params()
    assert params["text_features"] is clf.text_features_
    assert params["logit_scale"] == clf.logit_scale_ and params["random_state"] == 3
    assert probe.fit(X, y).score(X, y) > 0.5
    with pytest.raises(
        ValueError, match=r"no candidate method 'GDA\+'; choose from \['zero-shot'"
    ):
        clf.make_candidate("GDA+")
    image_only = CLIPClassifier(candidates=["GDA"], random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="'zero-shot' needs class text"):
        image_only.make_candidate("zero-shot")
    assert type(image_only.make_candidate("GDA")) is GDAClassifier
