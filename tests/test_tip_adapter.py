"""TipAdapterClassifier: the training-free cache, Tip-Adapter-F, partial_fit and
open vocabulary, on real CLIP features."""

import numpy as np
import pytest
from sklearn.model_selection import (
    validation_curve,
)

from sklearn_clip import (
    FewShotSplit,
    TipAdapterClassifier,
    ZeroShotClassifier,
)

from .conftest import assert_same_outputs_in_fresh_process, blobs, zero_shot_accuracy


# -- Tip-Adapter ------------------------------------------------------------------
@pytest.mark.parametrize("n_shots, gain", [(1, 0.005), (4, 0.03)])
def test_tip_adapter_beats_zero_shot_without_training(cars_shots, n_shots, gain):
    shots, X_test, y_test, text = cars_shots
    X, y = shots(n_shots)
    tip = TipAdapterClassifier(text_features=text, device="cpu").fit(X, y)
    assert not hasattr(tip.net_, "history") or len(tip.net_.history) == 0
    assert (
        tip.score(X_test, y_test)
        > zero_shot_accuracy(text, X, y, X_test, y_test) + gain
    )


def test_tip_adapter_without_cache_iszero_shot_accuracy(cars_shots):
    shots, X_test, _, text = cars_shots
    X, y = shots(2)
    tip = TipAdapterClassifier(cache_weight=0, text_features=text, device="cpu").fit(
        X, y
    )
    zero_shot = ZeroShotClassifier(text_features=text).fit(X, y)
    np.testing.assert_allclose(
        tip.decision_function(X_test[:50]),
        zero_shot.decision_function(X_test[:50]),
        atol=1e-3,
    )


def test_tip_adapter_default_cache_weight_wins_on_held_out_pool_images(load_features):
    # The default was chosen this way: 8 shots per class drawn from the
    # training pool, scored on the pool's other 8 (never the test split).
    data = load_features("stanford_cars")
    tip = TipAdapterClassifier(text_features=data["text_features"], device="cpu")
    _, held_out = validation_curve(
        tip,
        data["X_train"],
        data["y_train"],
        param_name="cache_weight",
        param_range=[None, 1.0],
        cv=FewShotSplit(8, n_splits=2, random_state=0),
    )
    default, paper = held_out.mean(axis=1)
    assert default > paper + 0.005
    assert tip._cache_weight() == 2.0
    assert tip.set_params(fine_tune=True)._cache_weight() == 1.0


def test_tip_adapter_f_improves_on_the_cache(cars_shots):
    shots, X_test, y_test, text = cars_shots
    X, y = shots(4)
    free = TipAdapterClassifier(text_features=text, device="cpu").fit(X, y)
    tuned = TipAdapterClassifier(
        fine_tune=True, text_features=text, device="cpu", random_state=0
    ).fit(X, y)
    losses = tuned.net_.history[:, "train_loss"]
    assert losses[-1] < losses[0]
    assert tuned.score(X_test, y_test) > free.score(X_test, y_test) + 0.01


def test_tip_adapter_partial_fit_extends_the_cache():
    rng = np.random.default_rng(0)
    text = np.eye(3, 8)
    X = text[[0, 1, 2] * 6] + 0.3 * rng.normal(size=(18, 8))
    y = np.array(["a", "b", "c"] * 6)
    whole = TipAdapterClassifier(text_features=text, device="cpu").fit(X, y)
    parts = TipAdapterClassifier(text_features=text, device="cpu").fit(X[:9], y[:9])
    parts.partial_fit(X[9:], y[9:])
    assert parts.cache_labels_.tolist() == y.tolist()
    np.testing.assert_allclose(
        parts.decision_function(X), whole.decision_function(X), rtol=1e-5
    )
    with pytest.raises(ValueError, match="not seen"):
        parts.partial_fit(X[:2], ["a", "zebra"])


def test_tip_adapter_open_vocabulary():
    rng = np.random.default_rng(1)
    text = np.eye(4, 8)
    X = text[[0, 1, 2] * 5] + 0.2 * rng.normal(size=(15, 8))
    y = np.array(["ant", "bee", "wasp"] * 5)
    tip = TipAdapterClassifier(text_features=text[:3], device="cpu").fit(X, y)
    # Drop "wasp", add "moth" (text row 3): cached classes keep their votes,
    # "moth" is recognised from its text alone.
    wider = tip.with_classes(["ant", "bee", "moth"], text_features=text[[0, 1, 3]])
    assert wider.classes_.tolist() == ["ant", "bee", "moth"]
    assert wider.predict(text[[3]] * 2).tolist() == ["moth"]
    np.testing.assert_array_equal(wider.predict(X[y == "ant"]), "ant")
    assert tip.classes_.tolist() == ["ant", "bee", "wasp"]  # the original is unchanged


def test_tip_adapter_pickles_small_and_predicts_identically(cars_shots, tmp_path):
    shots, X_test, _, text = cars_shots
    X, y = shots(2)
    tip = TipAdapterClassifier(text_features=text, device="cpu").fit(X, y)
    sizes = assert_same_outputs_in_fresh_process(
        [(tip, X_test[:20], "predict")], tmp_path
    )
    # Keys (392 x 512 float32) and text rows (twice: parameter and fitted):
    # about 1.6 MB, never CLIP.
    assert sizes[0] < 2_000_000


def test_tip_adapter_partial_fit_weights_new_cache_entries():
    X, y = blobs(30)
    text = np.eye(3, 16)
    tip = TipAdapterClassifier(text_features=text, device="cpu").fit(X[:20], y[:20])
    tip.partial_fit(X[20:], y[20:], sample_weight=np.full(10, 2.0))
    repeated = TipAdapterClassifier(text_features=text, device="cpu").fit(
        np.vstack([X[:20], X[20:], X[20:]]), np.concatenate([y[:20], y[20:], y[20:]])
    )
    np.testing.assert_allclose(
        tip.predict_proba(X), repeated.predict_proba(X), atol=1e-5
    )
