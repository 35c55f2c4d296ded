"""One list of the package's estimators, and everything that must name them all."""

import re
from pathlib import Path

import pytest

import sklearn_clip
from sklearn_clip import SKOPS_TRUSTED_TYPES, all_estimators
from sklearn_clip._layers import layer_of

from .test_common import ESTIMATORS as CHECKED

ROOT = Path(__file__).resolve().parents[1]


def test_all_estimators_lists_every_public_estimator_class():
    from sklearn.base import BaseEstimator

    public = {
        name
        for name in sklearn_clip.__all__
        if isinstance(getattr(sklearn_clip, name), type)
        and issubclass(getattr(sklearn_clip, name), BaseEstimator)
    }
    assert [name for name, _ in all_estimators()] == sorted(public)
    assert "CLIPClassifier" in public


def test_type_filter():
    classifiers = dict(all_estimators("classifier"))
    transformers = dict(all_estimators(["transformer"]))
    assert "CLIPClassifier" in classifiers and "CLIPFeaturizer" not in classifiers
    assert set(transformers) == {"CLIPFeaturizer", "ZeroShotLogits"}
    assert set(classifiers) | set(transformers) == {n for n, _ in all_estimators()}
    with pytest.raises(ValueError, match="type_filter.*regressor"):
        all_estimators("regressor")


def test_skops_trusts_exactly_the_listed_estimators():
    assert SKOPS_TRUSTED_TYPES == sorted(
        f"{cls.__module__}.{cls.__qualname__}" for _, cls in all_estimators()
    )


def test_every_estimator_gets_the_scikit_learn_checks():
    assert {cls for _, cls in all_estimators()} <= {type(e) for e in CHECKED}


def test_every_estimator_module_is_in_the_layout():
    for _, cls in all_estimators():
        module = cls.__module__.removeprefix("sklearn_clip.")
        assert layer_of(module) in ("estimators", "composite"), module


def test_every_estimator_is_in_the_api_reference():
    api = (ROOT / "docs" / "api.rst").read_text()
    listed = set(re.findall(r"^   (\w+)$", api, flags=re.MULTILINE))
    missing = {name for name, _ in all_estimators()} - listed
    assert not missing, f"docs/api.rst lacks {sorted(missing)}"
