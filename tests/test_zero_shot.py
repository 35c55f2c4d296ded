import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from sklearn_clip import ZeroShotClassifier, encode_class_names

from .conftest import TINY, assert_same_outputs_in_fresh_process


def test_reproduces_published_zero_shot_accuracy_on_stanford_cars(load_features):
    data = load_features("stanford_cars")
    clf = ZeroShotClassifier(text_features=data["text_features"])
    clf.fit(data["X_test"], data["y_test"])
    X, text = data["X_test"], data["text_features"]
    cosine = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ text.T
    expected = np.mean(cosine.argmax(axis=1) == data["y_test"])
    assert clf.score(data["X_test"], data["y_test"]) == expected
    # The data set's README gives 58.96 %; other BLAS builds may move ties.
    assert abs(100 * expected - 58.96) < 0.5


def _tiny_data(names, n_per_class=3, seed=0):
    """Embeddings near each class's text embedding, so zero-shot must get them."""
    text = encode_class_names(names, **TINY)
    rng = np.random.default_rng(seed)
    X = np.repeat(text, n_per_class, axis=0) + 0.01 * rng.normal(
        size=(len(names) * n_per_class, 64)
    )
    y = np.repeat(np.asarray(names, dtype=object), n_per_class)
    return X.astype(np.float32), y


def test_string_labels_are_prompt_names():
    X, y = _tiny_data(["ant", "bee", "wasp"])
    clf = ZeroShotClassifier(**TINY).fit(X, y)
    assert list(clf.classes_) == ["ant", "bee", "wasp"]
    assert (clf.predict(X) == y).all()
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    assert (clf.classes_[proba.argmax(1)] == y).all()
    assert clf.logit_scale_ == pytest.approx(1 / 0.07, rel=1e-4)  # the tiny model's


def test_integer_labels_with_class_names_dict_and_list():
    X, names = _tiny_data(["ant", "bee", "wasp"])
    codes = {"ant": 7, "bee": 3, "wasp": 11}
    y = np.array([codes[n] for n in names])
    by_dict = ZeroShotClassifier(**TINY, class_names={7: "ant", 3: "bee", 11: "wasp"})
    by_list = ZeroShotClassifier(**TINY, class_names=["bee", "ant", "wasp"])  # 3, 7, 11
    for clf in (by_dict, by_list):
        clf.fit(X, y)
        assert list(clf.classes_) == [3, 7, 11]
        assert (clf.predict(X) == y).all()


def test_integer_labels_without_names_explain_the_fix():
    X, _ = _tiny_data(["ant", "bee"])
    with pytest.raises(ValueError, match="class_names"):
        ZeroShotClassifier(**TINY).fit(X, [0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="no entry for labels \\[1\\]"):
        ZeroShotClassifier(**TINY, class_names={0: "ant"}).fit(X, [0, 0, 0, 1, 1, 1])


def test_text_features_shape_and_width_checks():
    X = np.eye(4, 8, dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(2, 8\)"):
        ZeroShotClassifier(text_features=np.eye(3, 8)).fit(X[:2], [0, 1])
    with pytest.raises(ValueError, match="embeds text in 64 dimensions"):
        ZeroShotClassifier(**TINY).fit(X, ["a", "b", "c", "d"])


def test_binary_decision_function_is_one_column():
    text = np.eye(2, 8, dtype=np.float32)
    clf = ZeroShotClassifier(text_features=text).fit(text, ["no", "yes"])
    scores = clf.decision_function(text)
    assert scores.shape == (2,) and scores[0] < 0 < scores[1]


def test_unfitted_raises():
    with pytest.raises(NotFittedError):
        ZeroShotClassifier().predict(np.zeros((1, 8)))


def test_with_classes_predicts_over_new_names():
    X, y = _tiny_data(["ant", "bee", "wasp"])
    clf = ZeroShotClassifier(**TINY).fit(X[y != "wasp"], y[y != "wasp"])
    assert "wasp" not in clf.predict(X)
    wider = clf.with_classes(["ant", "bee", "wasp"])
    assert (wider.predict(X) == y).all()
    assert list(clf.classes_) == ["ant", "bee"]  # the original is untouched


def test_clone_is_cheap_and_pickle_is_small_and_portable(tmp_path):
    X, y = _tiny_data(["ant", "bee", "wasp"])
    clf = ZeroShotClassifier(**TINY).fit(X, y)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params() and not hasattr(copy, "classes_")
    sizes = assert_same_outputs_in_fresh_process(
        [(clf, X, "predict"), (clf, X, "predict_proba")], tmp_path
    )
    assert max(sizes) < 4096  # 3 x 64 floats, not CLIP weights
    assert "torch" not in str(pickle.dumps(clf))
