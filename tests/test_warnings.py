"""Warnings stay correct under threads: no fit changes the process's warning
filters, and the model-mismatch guard keeps firing."""

import warnings

import numpy as np
import pytest
from joblib import Parallel, delayed, parallel_config

from sklearn_clip import (
    CLIPClassifier,
    CLIPModelMismatchWarning,
    LinearProbeClassifier,
    ZeroShotClassifier,
)


@pytest.fixture(scope="module")
def cars(load_features):
    cars = load_features("stanford_cars")
    rows = np.flatnonzero(cars["y_train"] < 12)
    return cars["X_train"][rows], cars["y_train"][rows], cars["text_features"][:12]


def _random_text(n_classes, seed=1):
    text = np.random.default_rng(seed).normal(size=(n_classes, 512))
    return text / np.linalg.norm(text, axis=1, keepdims=True)


def _mismatch_warnings(record):
    return [w for w in record if issubclass(w.category, CLIPModelMismatchWarning)]


def test_a_threaded_fit_leaves_the_filters_and_the_guard_alone(cars):
    X, y, text = cars
    with warnings.catch_warnings():  # the test's own scope, in the main thread
        before = list(warnings.filters)
        for _ in range(3):
            CLIPClassifier(text_features=text, n_jobs=2, random_state=0).fit(X, y)
        assert warnings.filters == before
        warnings.simplefilter("always")  # count every warning below
        with warnings.catch_warnings(record=True) as record:
            ZeroShotClassifier(text_features=_random_text(12)).fit(X, y)
    assert len(_mismatch_warnings(record)) == 1


def test_mismatched_text_is_reported_once_by_the_classifier_not_per_member(cars):
    X, y, _ = cars
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        CLIPClassifier(text_features=_random_text(12), n_jobs=2, random_state=0).fit(
            X, y
        )
    assert len(_mismatch_warnings(record)) == 1


def test_heads_in_joblib_threads_leave_the_filters_alone():
    # One sample per class with many classes: scikit-learn's label check
    # would warn "could represent a regression" (the heads do not).
    X = np.random.default_rng(0).normal(size=(40, 8))
    y = np.arange(40) % 30
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        with parallel_config(backend="threading", n_jobs=2):
            Parallel()(
                delayed(LinearProbeClassifier(device="cpu").fit)(X, y) for _ in range(6)
            )
        assert warnings.filters == before
    assert not [w for w in record if "regression" in str(w.message)]


def test_warnings_name_the_users_line_or_the_package_line():
    import threading

    from sklearn_clip._warnings import warn

    def user_code():
        warn("from user code")  # the line a warning should name

    def run(target):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            target()
        return record[0].filename

    # In a joblib worker thread and a plain thread: the user's function, not
    # joblib's or threading's frames.
    in_joblib = run(
        lambda: Parallel(n_jobs=2, prefer="threads")(
            delayed(user_code)() for _ in range(1)
        )
    )
    assert in_joblib == __file__

    def in_thread():
        thread = threading.Thread(target=user_code)
        thread.start()
        thread.join()

    assert run(in_thread) == __file__
    # Called through the console script (no user line at all): the package
    # line that raised it, not the script's "sklearn-clip:8".
    from sklearn_clip import LinearProbeClassifier
    from sklearn_clip._base import warn_unused_parameters

    script = compile(
        "warn_unused_parameters(probe, ['alpha'], 'here')",
        "/venv/bin/sklearn-clip",
        "exec",
    )
    namespace = {
        "warn_unused_parameters": warn_unused_parameters,
        "probe": LinearProbeClassifier(alpha=2.0),
    }
    filename = run(lambda: exec(script, namespace))
    assert filename.endswith("_base.py")


def _unused_parameter_fit():
    # A parameter without effect warns from deep inside the package
    # (CLIPClassifier.fit -> warn_unused_parameters -> warn).
    X = np.random.default_rng(0).normal(size=(12, 4))
    clf = CLIPClassifier(candidates=["GDA"], logit_scale=5.0)
    return clf.fit, X, [0, 1] * 6


def test_a_warning_in_a_worker_process_names_the_package_entry():
    # A grid-search worker process: its outermost frame is
    # multiprocessing/process.py, no line of the user's; the warning names
    # the package's entry point (the fit it called), not multiprocessing.
    import multiprocessing.process

    fit, X, y = _unused_parameter_fit()
    worker = compile("fit(X, y)", multiprocessing.process.__file__, "exec")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        exec(worker, {"fit": fit, "X": X, "y": y})
    (warning,) = [w for w in record if "logit_scale" in str(w.message)]
    assert warning.filename.endswith("_clip_classifier.py"), warning.filename


def test_the_command_shows_warnings_as_its_own_lines(monkeypatch, capsys, tmp_path):
    from sklearn_clip import _bench
    from sklearn_clip._cli import main

    def run(args):
        fit, X, y = _unused_parameter_fit()
        fit(X, y)
        return 0

    monkeypatch.setattr(_bench, "run", run)
    monkeypatch.setattr("sys.argv", ["sklearn-clip", "bench", str(tmp_path)])
    before = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main() == 0
    assert warnings.showwarning is before
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("sklearn-clip bench: warning: ")
    assert "logit_scale" in line and line.endswith("(UserWarning)")
    assert ".py" not in line
