"""What it takes to load the package's estimators with skops.

``skops.io.load`` refuses every type it does not trust by default. A fitted
sklearn-clip estimator holds only numpy arrays, Python scalars, lists,
dicts and strings besides itself (trained skorch nets are stored as their
weight arrays and rebuilt on load), so the only types to trust are the
package's own estimator classes, taken from :func:`all_estimators`.
"""

from ._discovery import all_estimators

#: Fully qualified names of the package's estimators, for
#: ``skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)``.
SKOPS_TRUSTED_TYPES = sorted(
    f"{cls.__module__}.{cls.__qualname__}" for _, cls in all_estimators()
)
