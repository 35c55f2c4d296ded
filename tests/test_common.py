"""scikit-learn's estimator checks on every public estimator."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    CLIPFeaturizer,
    GDAClassifier,
    LinearProbeClassifier,
    TipAdapterClassifier,
    VisualPromptClassifier,
    ZeroShotClassifier,
    ZeroShotLogits,
    ZSLinearProbeClassifier,
)

from .conftest import TINY, hashed_class_text

# The stand-in text is unrelated to the checks' data, so the model-mismatch
# guard rightly fires; it is tested on its own in test_contract.py.
pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn_clip.CLIPModelMismatchWarning"
)

# The text-based estimators get their class text from a callable, as a user
# with a text encoder of their own would give it: the checks fit on unnamed
# integer labels and on 1-20 features, which no CLIP text encoder embeds.
TEXT = dict(text_features=hashed_class_text, device="cpu")

ESTIMATORS = [
    CLIPFeaturizer(**TINY),
    ZeroShotClassifier(**TEXT),
    ZeroShotLogits(**TEXT),
    LinearProbeClassifier(device="cpu", random_state=0),
    AttentionProbeClassifier(**TEXT, random_state=0),
    CLIPAdapterClassifier(**TEXT, random_state=0),
    TipAdapterClassifier(**TEXT),
    ZSLinearProbeClassifier(**TEXT, random_state=0),
    GDAClassifier(),
    GDAClassifier(text_features=hashed_class_text),
    VisualPromptClassifier(**TINY, prompt_size=8, max_epochs=1, verbose=0),
]


# Per check, with its reason; everything else must pass (xfail_strict).
_TEXT_LOGITS = (
    "logits are cosine similarities to the class text; with the checks' "
    "stand-in text, unrelated to their data, training accuracy stays below "
    "the check's 0.83 (the estimator reaches it on real CLIP features)"
)
EXPECTED_FAILED_CHECKS = {
    "CLIPAdapterClassifier": {"check_classifiers_train": _TEXT_LOGITS},
    "TipAdapterClassifier": {"check_classifiers_train": _TEXT_LOGITS},
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
