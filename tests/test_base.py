"""Machinery shared by the classifiers (_base): parameters that warn when they
have no effect, the model-mismatch guard, labels, versioned pickles, outputs."""

import pickle
import warnings

import numpy as np
import pytest
import torch

import sklearn_clip._base as base_module
from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPModelMismatchWarning,
    GDAClassifier,
    InconsistentVersionWarning,
    LinearProbeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
    ZSLinearProbeClassifier,
    few_shot_indices,
    load_clip,
)

from .conftest import TINY, blobs


@pytest.mark.parametrize(
    "estimator, match",
    [
        (GDAClassifier(templates="imagenet"), "templates has no effect in image-only"),
        (
            ZeroShotClassifier(
                text_features=np.eye(3, 16), class_names=["a", "b", "c"]
            ),
            "class_names has no effect when text_features is given",
        ),
        (
            TipAdapterClassifier(text_features=np.eye(3, 16), lr=0.1, max_epochs=5),
            "lr, max_epochs have no effect without fine_tune=True",
        ),
        (
            AttentionProbeClassifier(text_features=np.eye(3, 16), logit_scale=50.0),
            "logit_scale has no effect on the attention probe",
        ),
        (
            LinearProbeClassifier(validation_fraction=0.3),
            "validation_fraction has no effect unless early_stopping=True",
        ),
    ],
    ids=lambda p: type(p).__name__ if not isinstance(p, str) else "",
)
def test_parameters_without_effect_warn(estimator, match):
    X, y = blobs(30)
    estimator.set_params(device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CLIPModelMismatchWarning)
        with pytest.warns(UserWarning, match=match):
            estimator.fit(X, y)


def test_defaults_fit_without_warnings():
    X, y = blobs(30)
    text = np.eye(3, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", CLIPModelMismatchWarning)
        for estimator in [
            GDAClassifier(),
            LinearProbeClassifier(device="cpu"),
            TipAdapterClassifier(text_features=text, device="cpu"),
            ZSLinearProbeClassifier(text_features=text, device="cpu"),
        ]:
            estimator.fit(X, y)


def test_matching_text_does_not_warn_and_other_models_text_does(cars_data):
    train = few_shot_indices(cars_data["y_train"], 2, random_state=0)
    X, y = cars_data["X_train"][train], cars_data["y_train"][train]
    text = cars_data["text_features"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CLIPModelMismatchWarning)
        ZeroShotClassifier(text_features=text).fit(X, y)
    # Text of "another model": the same classes in an unrelated space.
    other = np.random.default_rng(0).normal(size=text.shape)
    for head in [
        ZeroShotClassifier(text_features=other),
        TipAdapterClassifier(text_features=other, device="cpu"),
    ]:
        with pytest.warns(
            CLIPModelMismatchWarning, match="chance level.*text_features"
        ):
            head.fit(X, y)


def test_mismatch_warning_names_model_and_weights(tmp_path):
    # A local checkpoint counts as pretrained weights: random tiny weights
    # saved to a file stand in for a model that did not embed X.
    path = tmp_path / "other.pt"
    torch.save(load_clip(**TINY).model.state_dict(), path)
    X, y = blobs(40, n_classes=4, n_features=64)
    names = np.array(["ant", "bee", "fly", "wasp"])[y]
    clf = ZeroShotClassifier(model=TINY["model"], pretrained=str(path), device="cpu")
    with pytest.warns(CLIPModelMismatchWarning) as record:
        clf.fit(X, names)
    message = str(record[0].message)
    assert "model='sklearn-clip-tiny'" in message and str(path) in message


@pytest.mark.parametrize(
    "estimator", [GDAClassifier(), LinearProbeClassifier(device="cpu")]
)
def test_mixed_label_types_name_the_types(estimator):
    X, _ = blobs(6)
    y = np.array([np.int64(1), "a", "b", np.int64(1), "a", "b"], dtype=object)
    with pytest.raises(ValueError, match="one type.*int, str"):
        estimator.fit(X, y)


def test_pickles_record_the_version(monkeypatch):
    X, y = blobs(30)
    gda = GDAClassifier().fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = pickle.loads(pickle.dumps(gda))  # same version: silent
    np.testing.assert_array_equal(same.predict(X), gda.predict(X))
    monkeypatch.setattr(base_module, "__version__", "0.0.1")
    old = pickle.dumps(gda)
    monkeypatch.undo()
    with pytest.warns(InconsistentVersionWarning, match="from sklearn-clip 0.0.1"):
        pickle.loads(old)


@pytest.mark.filterwarnings("ignore::sklearn_clip.CLIPModelMismatchWarning")
def test_pickle_missing_attributes_fails_at_load_naming_the_version(monkeypatch):
    X, y = blobs(30)
    gda = GDAClassifier(text_features=np.eye(3, 16)).fit(X, y)
    del gda.scale_  # an older layout
    monkeypatch.setattr(base_module, "__version__", "0.0.1")
    old = pickle.dumps(gda)
    monkeypatch.undo()
    with pytest.warns(InconsistentVersionWarning):
        with pytest.raises(ValueError, match="sklearn-clip 0.0.1 and lacks scale_"):
            pickle.loads(old)


def test_unfitted_pickles_load_without_fitted_attributes():
    clf = pickle.loads(pickle.dumps(LinearProbeClassifier(alpha=2.0)))
    assert clf.alpha == 2.0


@pytest.mark.filterwarnings("ignore::sklearn_clip.CLIPModelMismatchWarning")
def test_predict_log_proba_is_the_log_of_predict_proba():
    X, y = blobs(30)
    for clf in [
        GDAClassifier(),
        ZeroShotClassifier(text_features=np.eye(3, 16)),
        LinearProbeClassifier(device="cpu"),
    ]:
        clf.fit(X, y)
        np.testing.assert_allclose(
            np.exp(clf.predict_log_proba(X)), clf.predict_proba(X), atol=1e-12
        )


def test_prediction_methods_refuse_options_they_do_not_take():
    X, y = blobs(30)
    clf = LinearProbeClassifier(device="cpu").fit(X, y)
    for method in (
        "predict",
        "predict_proba",
        "predict_log_proba",
        "decision_function",
    ):
        with pytest.raises(TypeError, match=r"take no options; got \['use_prompt'\]"):
            getattr(clf, method)(X, use_prompt=False)
