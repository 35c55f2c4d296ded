"""scikit-learn's estimator checks on every public estimator."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    CLIPClassifier,
    CLIPFeaturizer,
    GDAClassifier,
    LinearProbeClassifier,
    TipAdapterClassifier,
    TransCLIPClassifier,
    VisualPromptClassifier,
    ZeroShotClassifier,
    ZeroShotLogits,
    ZSLinearProbeClassifier,
)

from .conftest import TINY, hashed_class_text

# The stand-in text is unrelated to the checks' data, so the model-mismatch
# guard rightly fires; it is tested on its own in test_base.py.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn_clip.CLIPModelMismatchWarning")

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
    CLIPClassifier(candidates="image-only", device="cpu", random_state=0),
    TransCLIPClassifier(LinearProbeClassifier(device="cpu", random_state=0)),
    VisualPromptClassifier(**TINY, prompt_size=8, max_epochs=1, verbose=0),
]


# Per estimator and check, with its reason; everything else must pass
# (xfail_strict). At most ten declarations in all; the docs state the count
# (tests/test_documented_numbers.py).
_TEXT_LOGITS = (
    "logits are cosine similarities to the class text; with the checks' "
    "stand-in text, unrelated to their data, training accuracy stays below "
    "the check's 0.83 (test_heads.py: above it on real CLIP features)"
)
_FLOAT32_STEPS = (
    "trained in float32 by {}: weights and repeated rows give the same model up "
    "to rounding (about 1e-4 on probabilities, test_training.py), not the "
    "check's 1e-7"
)
_ZERO_START = (
    "{} from a zero (or zero-shot) start move the logits too little for the "
    "check's 1000 : 0.0001 class weights on its 30 rows; class_weight is "
    "applied (test_heads.py: 'balanced' on imbalanced real features)"
)


def _expected_failed_checks(estimator):
    name = type(estimator).__name__
    failures = {
        "LinearProbeClassifier": {
            "check_sample_weight_equivalence_on_dense_data": _FLOAT32_STEPS.format(
                "L-BFGS steps"
            ),
        },
        "AttentionProbeClassifier": {
            "check_sample_weight_equivalence_on_dense_data": _FLOAT32_STEPS.format(
                "AdamW steps"
            ),
            "check_class_weight_classifiers": _ZERO_START.format("25 AdamW steps"),
        },
        "CLIPAdapterClassifier": {
            "check_classifiers_train": _TEXT_LOGITS,
            "check_sample_weight_equivalence_on_dense_data": _FLOAT32_STEPS.format(
                "shuffled mini-batches, which repeated rows change,"
            ),
            "check_class_weight_classifiers": _ZERO_START.format(
                "30 epochs of a residual adapter"
            ),
        },
        "TipAdapterClassifier": {"check_classifiers_train": _TEXT_LOGITS},
        "TransCLIPClassifier": {
            "check_classifiers_classes": (
                "the check's binary labels are -1 and 1; -1 marks an unlabelled "
                "row here, as in scikit-learn's semi-supervised estimators"
            ),
        },
        "ZSLinearProbeClassifier": {
            "check_sample_weight_equivalence_on_dense_data": _FLOAT32_STEPS.format(
                "L-BFGS steps"
            ),
        },
    }.get(name, {})
    if name == "GDAClassifier" and estimator.text_features is not None:
        failures["check_sample_weight_equivalence_on_dense_data"] = (
            "discriminant_weight='auto' cross-validates over rows: repeated rows "
            "fall into different folds than one weighted row, so the chosen blend "
            "weight may differ (image-only GDA passes this check)"
        )
    return failures


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_at_most_ten_expected_failures_across_all_estimators():
    assert sum(len(_expected_failed_checks(e)) for e in ESTIMATORS) <= 10
