"""GDAClassifier: shrunk LDA, one shot, the blend with class text and its
cross-validated weight, on real CLIP features."""

import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    StratifiedKFold,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_clip import (
    GDAClassifier,
    ZeroShotClassifier,
    few_shot_indices,
)
from sklearn_clip._gda import AUTO_WEIGHTS, FALLBACK_WEIGHTS

from .conftest import TINY, zero_shot_accuracy


# -- GDA ------------------------------------------------------------------------------
def test_gda_is_shrunk_lda(cars_shots):
    shots, X_test, _, _ = cars_shots
    X, y = shots(4)
    gda = GDAClassifier(shrinkage=0.3).fit(X, y)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.3).fit(X, y)
    # Same model: scikit-learn's decision adds log(1/196) to every class.
    np.testing.assert_array_equal(gda.predict(X_test), lda.predict(X_test))
    np.testing.assert_allclose(
        gda.predict_proba(X_test[:100]), lda.predict_proba(X_test[:100]), atol=1e-6
    )


def test_gda_handles_one_shot_where_lda_refuses(cars_shots):
    shots, X_test, y_test, _ = cars_shots
    X, y = shots(1)
    with pytest.raises(ValueError):
        LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.4).fit(X, y)
    assert GDAClassifier().fit(X, y).score(X_test, y_test) > 0.15  # chance: 0.005


# GDA wins on pets and flowers; on caltech101 it loses, by under a point
# (README: 93.75 against 94.36); the test pins both sides of that claim.
@pytest.mark.parametrize(
    "name, margin",
    [("oxford_pets", 0.0), ("oxford_flowers", 0.0), ("caltech101", -0.01)],
)
def test_gda_without_text_against_scaled_logistic_regression(
    load_features, name, margin
):
    data = load_features(name)
    X, y = data["X_train"], data["y_train"]  # the 16-shot pool
    gda = GDAClassifier().fit(X, y).score(data["X_test"], data["y_test"])
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    lr = lr.fit(X, y).score(data["X_test"], data["y_test"])
    assert gda >= lr + margin
    if margin < 0:
        assert gda < lr  # the documented loss is still there


@pytest.mark.parametrize("n_shots", [4, 8])
def test_gda_with_text_beats_both_parts(cars_shots, n_shots):
    shots, X_test, y_test, text = cars_shots
    X, y = shots(n_shots)
    blended = GDAClassifier(discriminant_weight="auto", text_features=text).fit(X, y)
    image_only = GDAClassifier().fit(X, y).score(X_test, y_test)
    zero_shot = zero_shot_accuracy(text, X, y, X_test, y_test)
    assert blended.discriminant_weight_ in AUTO_WEIGHTS
    assert blended.score(X_test, y_test) > max(image_only, zero_shot) + 0.02
    assert not hasattr(blended, "with_classes")  # available_if: hasattr tells
    with pytest.raises(AttributeError) as error:
        blended.with_classes(["x"])
    assert "open vocabulary" in str(error.value.__cause__)


def test_gda_auto_weight_is_cross_validated_on_the_training_set(cars_shots):
    shots, _, _, text = cars_shots
    X, y = shots(8)
    auto = GDAClassifier(discriminant_weight="auto", text_features=text).fit(X, y)
    # Recompute the cross-validated accuracy of every weight by hand.
    folds = StratifiedKFold(4, shuffle=True, random_state=0)
    y_encoded = np.searchsorted(auto.classes_, y)
    correct = np.zeros(len(AUTO_WEIGHTS))
    for train, held_out in folds.split(X, y_encoded):
        fold = GDAClassifier(discriminant_weight=1.0, text_features=text).fit(
            X[train], y[train]
        )
        zero_shot = fold._zero_shot_logits(X[held_out])
        discriminant = fold._discriminant(X[held_out]) / fold.scale_
        for i, weight in enumerate(AUTO_WEIGHTS):
            predicted = (zero_shot + weight * discriminant).argmax(axis=1)
            correct[i] += np.sum(predicted == y_encoded[held_out])
    assert auto.discriminant_weight_ == AUTO_WEIGHTS[int(np.argmax(correct))]
    assert (
        0 < auto.discriminant_weight_ < AUTO_WEIGHTS[-1]
    )  # an interior choice on real features


@pytest.mark.parametrize("n_shots", [1, 2])
def test_gda_auto_weight_falls_back_below_three_shots(cars_shots, n_shots):
    shots, X_test, y_test, text = cars_shots
    X, y = shots(n_shots)
    gda = GDAClassifier(discriminant_weight="auto", text_features=text).fit(X, y)
    assert gda.discriminant_weight_ == FALLBACK_WEIGHTS[n_shots]
    assert (
        gda.score(X_test, y_test)
        > zero_shot_accuracy(text, X, y, X_test, y_test) + 0.005
    )


def test_gda_auto_weight_with_class_names_from_clip():
    # String labels are the prompts: CLIP (the tiny test model) embeds them.
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(mean, 1, (6, 64)) for mean in (0, 2, 4)]).astype(
        np.float32
    )
    y = np.repeat(["ant", "bee", "wasp"], 6)
    gda = GDAClassifier(discriminant_weight="auto", **TINY).fit(X, y)
    assert gda.text_features_.shape == (3, 64)
    assert gda.discriminant_weight_ in AUTO_WEIGHTS and gda.scale_ > 0
    assert set(gda.predict(X)) <= {"ant", "bee", "wasp"}
    assert gda.score(X, y) > 0.9


def test_gda_weight_spans_zero_shot_to_image_only(cars_shots):
    shots, X_test, _, text = cars_shots
    X, y = shots(4)
    zero_shot = ZeroShotClassifier(text_features=text).fit(X, y).predict(X_test)
    image_only = GDAClassifier().fit(X, y).predict(X_test)
    none = GDAClassifier(discriminant_weight=0, text_features=text).fit(X, y)
    np.testing.assert_array_equal(none.predict(X_test), zero_shot)
    huge = GDAClassifier(discriminant_weight=1e6, text_features=text).fit(X, y)
    assert (huge.predict(X_test) == image_only).mean() > 0.999


def test_gda_rejects_identical_samples():
    with pytest.raises(ValueError, match="identical"):
        GDAClassifier().fit(np.ones((4, 3)), [0, 0, 1, 1])


def test_gda_uses_text_features_when_given(cars_data):
    train = few_shot_indices(cars_data["y_train"], 1, random_state=0)
    X, y = cars_data["X_train"][train], cars_data["y_train"][train]
    X_test, y_test = cars_data["X_test"], cars_data["y_test"]
    with_text = GDAClassifier(text_features=cars_data["text_features"]).fit(X, y)
    image_only = GDAClassifier().fit(X, y)
    assert hasattr(with_text, "discriminant_weight_")
    assert not hasattr(image_only, "discriminant_weight_")
    # At one shot the text is worth tens of points (1-shot image-only GDA
    # cannot estimate a within-class spread).
    assert with_text.score(X_test, y_test) > image_only.score(X_test, y_test) + 0.2


@pytest.mark.filterwarnings("ignore::sklearn_clip.CLIPModelMismatchWarning")
def test_gda_refit_without_text_drops_the_text_state(cars_data):
    X, y = cars_data["X_train"][:64], cars_data["y_train"][:64]
    gda = GDAClassifier(text_features=cars_data["text_features"][: len(np.unique(y))])
    gda.fit(X, y)
    gda.set_params(text_features=None).fit(X, y)
    assert not hasattr(gda, "discriminant_weight_")
    np.testing.assert_array_equal(gda.predict(X), GDAClassifier().fit(X, y).predict(X))
