"""Warnings that point at the user's line, not into scikit-learn or us."""

import concurrent.futures
import os
import sys
import threading
import warnings

import joblib
import sklearn

# Frames of the package and of the libraries that call it for the user
# (scikit-learn's wrappers, joblib's workers, thread pools).
_INTERNAL = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (sys.modules[__package__], sklearn, joblib, concurrent.futures)
) + (threading.__file__,)
#: The console script, whose frame is no line of the user's either.
_SCRIPT = "sklearn-clip"


def warn(message, category=UserWarning):
    """``warnings.warn`` with the stack level of the first caller outside
    sklearn-clip, scikit-learn, joblib and thread pools (``transform`` runs
    inside scikit-learn's ``set_output`` wrapper, ``fit`` inside
    ``_fit_context``, a worker inside joblib). Where there is no such caller
    (the command line, a worker thread) the warning names the package line
    that raised it.
    """
    frame = sys._getframe(1)
    level = 2  # stacklevel=2 names the frame of sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame = frame.f_back
        level += 1
    if frame is None or os.path.basename(frame.f_code.co_filename) == _SCRIPT:
        level = 2
    warnings.warn(message, category, stacklevel=level)
