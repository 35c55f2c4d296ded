"""The one list of the package's public estimators."""

import importlib
import inspect

from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin

_TYPES = {"classifier": ClassifierMixin, "transformer": TransformerMixin}


def all_estimators(type_filter=None):
    """The package's public estimators, as scikit-learn's ``all_estimators``
    lists scikit-learn's.

    Every estimator class exported by ``sklearn_clip`` is listed; the list
    feeds :data:`SKOPS_TRUSTED_TYPES`, the estimator checks, the layout
    test and the API reference, so none of them can miss one.

    Parameters
    ----------
    type_filter : {"classifier", "transformer"}, list of them or None, \
default=None
        Keep only estimators of these kinds; None lists all.

    Returns
    -------
    estimators : list of (str, type)
        ``(name, class)`` pairs sorted by name.

    Examples
    --------
    >>> from sklearn_clip import all_estimators
    >>> [name for name, _ in all_estimators("transformer")]
    ['CLIPFeaturizer', 'ZeroShotLogits']
    """
    package = importlib.import_module(__package__)
    kinds = [type_filter] if isinstance(type_filter, str) else type_filter
    unknown = set(kinds or ()) - set(_TYPES)
    if unknown:
        raise ValueError(
            f"type_filter must be None or among {sorted(_TYPES)}; got {sorted(unknown)}"
        )
    estimators = []
    for name in package.__all__:
        if name.isupper() or not name[0].isupper():
            continue  # constants and functions (SKOPS_TRUSTED_TYPES is built from this)
        value = getattr(package, name)
        if not (inspect.isclass(value) and issubclass(value, BaseEstimator)):
            continue
        if kinds and not any(issubclass(value, _TYPES[kind]) for kind in kinds):
            continue
        estimators.append((name, value))
    return sorted(estimators)
