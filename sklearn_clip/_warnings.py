"""Warnings that point at the user's line, not into scikit-learn or us."""

import concurrent.futures
import multiprocessing
import os
import runpy
import sys
import threading
import warnings

import joblib
import sklearn

#: The package's own frames.
_PACKAGE = os.path.dirname(sys.modules[__package__].__file__) + os.sep
# Frames of the package and of the libraries that call it for the user
# (scikit-learn's wrappers, joblib's workers, thread pools).
_INTERNAL = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (sklearn, joblib, concurrent.futures)
) + (_PACKAGE, threading.__file__)
#: Frames that start a process or a worker: no line of the user's either
#: (a worker process's ``multiprocessing/process.py``, ``python -m``'s runpy,
#: the console script).
_RUNNERS = (os.path.dirname(multiprocessing.__file__) + os.sep, runpy.__file__)
_SCRIPT = "sklearn-clip"


def _is_runner(filename):
    return filename.startswith(_RUNNERS) or os.path.basename(filename) == _SCRIPT


def warn(message, category=UserWarning):
    """``warnings.warn`` with the stack level of the first caller outside
    sklearn-clip, scikit-learn, joblib and thread pools (``transform`` runs
    inside scikit-learn's ``set_output`` wrapper, ``fit`` inside
    ``_fit_context``, a worker inside joblib). Where there is no such caller
    (a worker thread or process, the command line) the warning names the
    package's entry point: the outermost sklearn-clip line on the stack (the
    ``fit`` that a grid-search worker called, say), not a line deep inside.
    """
    frame = sys._getframe(1)
    level = 2  # stacklevel=2 names the frame of sys._getframe(1)
    entry = level
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        if frame.f_code.co_filename.startswith(_PACKAGE):
            entry = level
        frame = frame.f_back
        level += 1
    if frame is None or _is_runner(frame.f_code.co_filename):
        level = entry
    warnings.warn(message, category, stacklevel=level)
