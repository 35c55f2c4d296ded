"""scikit-learn's estimator checks on every public estimator."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    CLIPFeaturizer,
    GDAClassifier,
    LinearProbeClassifier,
    TipAdapterClassifier,
    VisualPromptClassifier,
    ZSLinearProbeClassifier,
    ZeroShotClassifier,
    ZeroShotLogits,
)

from .conftest import TINY

# The text-based estimators' classifier *is* the text embedding of each class name,
# which the generic checks cannot provide: they fit on integer labels without
# names, and on matrices of 1-20 features where a CLIP embedding is 64 wide
# (tiny model) or 512 wide. Every check that fits therefore fails by design;
# the behaviour those checks cover (pickling, fitted state, dtypes, sample-order
# invariance, ...) is tested directly in test_zero_shot.py and test_heads.py.
_NEEDS_NAMED_CLASSES_OF_CLIP_WIDTH = (
    "fits on unnamed integer labels and on a feature width no CLIP model has"
)
_ZERO_SHOT_FITTING_CHECKS = [
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes",
    "check_dtype_object", "check_pipeline_consistency", "check_estimators_nan_inf",
    "check_estimators_pickle", "check_f_contiguous_array_estimator",
    "check_classifier_data_not_an_array", "check_classifiers_classes",
    "check_classifiers_train", "check_supervised_y_2d",
    "check_decision_proba_consistency", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature",
    "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
    "check_n_features_in", "check_fit2d_predict1d",
    # the same fits, in their partial_fit and transformer variants
    "check_estimators_partial_fit_n_features", "check_transformer_data_not_an_array",
    "check_transformer_general", "check_transformer_preserve_dtypes",
]
_TEXT_BASED = (ZeroShotClassifier, ZeroShotLogits, AttentionProbeClassifier,
               CLIPAdapterClassifier, TipAdapterClassifier, ZSLinearProbeClassifier)


def _expected_failed_checks(estimator):
    if not isinstance(estimator, _TEXT_BASED):
        return {}
    checks = set(_ZERO_SHOT_FITTING_CHECKS)
    if not hasattr(estimator, "partial_fit"):
        checks.discard("check_estimators_partial_fit_n_features")
    if hasattr(estimator, "net_") or hasattr(estimator, "partial_fit"):
        # Trainable heads reject one class ("at least 2 classes"), as required.
        checks.discard("check_fit2d_1sample")
    return dict.fromkeys(sorted(checks), _NEEDS_NAMED_CLASSES_OF_CLIP_WIDTH)


@parametrize_with_checks(
    [
        CLIPFeaturizer(**TINY),
        ZeroShotClassifier(**TINY),
        ZeroShotLogits(**TINY),
        LinearProbeClassifier(device="cpu", random_state=0),
        AttentionProbeClassifier(**TINY, random_state=0),
        CLIPAdapterClassifier(**TINY, random_state=0),
        TipAdapterClassifier(**TINY),
        ZSLinearProbeClassifier(**TINY, random_state=0),
        GDAClassifier(),
        VisualPromptClassifier(**TINY, prompt_size=8, max_epochs=1, verbose=0),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
