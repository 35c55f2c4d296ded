"""Work-arounds for the libraries the package builds on, and the one place
that imports scikit-learn's private names.

scikit-learn's private helpers (parameter constraints, ``_fit_context``,
sample-weight and feature-name checks) are what its own estimators and
scikit-learn-contrib projects use; they may move between releases. Every
module imports them from here, so a move is mended once, and
``pyproject.toml`` bounds scikit-learn to the releases tested
(``tests/test_compat.py`` checks the bound against the installed version).
"""

import importlib.abc
import sys

from sklearn.base import _fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
    validate_params,
)
from sklearn.utils.validation import _check_feature_names_in, _check_sample_weight

__all__ = [
    "HasMethods",
    "Interval",
    "StrOptions",
    "_check_feature_names_in",
    "_check_sample_weight",
    "_fit_context",
    "make_importable_without_docstrings",
    "validate_params",
]

#: The smallest docstring from which skorch builds its nets' docstrings (the
#: text after the fifth line must hold a ``criterion`` parameter entry).
_NEURAL_NET_DOC = "NeuralNet\n\n\n\n\n    criterion : torch criterion\n      Loss.\n"


class _SkorchDocstrings(importlib.abc.MetaPathFinder):
    """Under ``python -OO`` docstrings are None, and skorch's classifier and
    regressor modules build their classes' docstrings from ``NeuralNet``'s
    at import time, which then fails (``AttributeError: 'NoneType' object
    has no attribute 'split'``). Before either module is imported, give
    ``NeuralNet`` a minimal docstring; the module itself is imported as
    usual (this finder finds nothing).
    """

    def find_spec(self, name, path=None, target=None):
        if name in ("skorch.classifier", "skorch.regressor"):
            net = sys.modules.get("skorch.net")
            if net is not None and net.NeuralNet.__doc__ is None:
                net.NeuralNet.__doc__ = _NEURAL_NET_DOC
        return None


def make_importable_without_docstrings():
    """Let skorch import under ``python -OO`` (see :class:`_SkorchDocstrings`)."""
    if sys.flags.optimize >= 2 and not any(
        isinstance(finder, _SkorchDocstrings) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _SkorchDocstrings())
