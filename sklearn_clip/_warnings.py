"""Warnings that point at the user's line, not into scikit-learn or us."""

import os
import sys
import warnings

import sklearn

_INTERNAL = (
    os.path.dirname(__file__) + os.sep,
    os.path.dirname(sklearn.__file__) + os.sep,
)


def warn(message, category=UserWarning):
    """``warnings.warn`` with the stack level of the first caller outside
    sklearn-clip and scikit-learn (``transform`` runs inside scikit-learn's
    ``set_output`` wrapper, ``fit`` inside ``_fit_context``, ...).
    """
    frame = sys._getframe(1)
    level = 2  # stacklevel=2 names the frame of sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
