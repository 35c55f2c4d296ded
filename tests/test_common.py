"""scikit-learn's estimator checks on every public estimator."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_clip import CLIPFeaturizer, ZeroShotClassifier

from .conftest import TINY

# ZeroShotClassifier's classifier *is* the text embedding of each class name,
# which the generic checks cannot provide: they fit on integer labels without
# names, and on matrices of 1-20 features where a CLIP embedding is 64 wide
# (tiny model) or 512 wide. Every check that fits therefore fails by design;
# the behaviour those checks cover (pickling, fitted state, dtypes, sample-order
# invariance, ...) is tested directly in test_zero_shot.py.
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
]


def _expected_failed_checks(estimator):
    if isinstance(estimator, ZeroShotClassifier):
        return dict.fromkeys(_ZERO_SHOT_FITTING_CHECKS, _NEEDS_NAMED_CLASSES_OF_CLIP_WIDTH)
    return {}


@parametrize_with_checks(
    [CLIPFeaturizer(**TINY), ZeroShotClassifier(**TINY)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
