"""The thread policy of the heads: one intra-op thread while a head trains
or predicts on the CPU, the caller's setting restored afterwards, in the
main thread and in joblib workers."""

import threading

import numpy as np
import pytest
import torch
from joblib import Parallel, delayed, parallel_config
from threadpoolctl import threadpool_info

from sklearn_clip import LinearProbeClassifier
from sklearn_clip._linear_probe import LinearProbeModule
from sklearn_clip._torch_utils import HEAD_THREADS_VARIABLE


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 16)).astype(np.float32)
    return X, np.repeat([0, 1, 2], 20)


@pytest.fixture
def threads_seen(monkeypatch):
    """torch's intra-op thread count at every forward pass of the linear probe."""
    seen = []
    forward = LinearProbeModule.forward

    def spy(self, X):
        seen.append(torch.get_num_threads())
        return forward(self, X)

    monkeypatch.setattr(LinearProbeModule, "forward", spy)
    return seen


@pytest.fixture
def two_torch_threads():
    """Two intra-op torch threads in this thread whatever the machine or
    ``OMP_NUM_THREADS`` (so that a head's one thread is a change the tests
    can see), the caller's count restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    assert torch.get_num_threads() == 2
    yield
    torch.set_num_threads(before)


def _openmp_threads():
    return [(i["filepath"], i["num_threads"]) for i in threadpool_info()]


def test_a_head_trains_and_predicts_with_one_thread_and_restores_the_setting(
    two_torch_threads, threads_seen
):
    X, y = _data()
    before, openmp = torch.get_num_threads(), _openmp_threads()
    assert before == 2
    clf = LinearProbeClassifier(device="cpu", random_state=0).fit(X, y)
    training = list(threads_seen)
    clf.predict_proba(X)
    assert training and set(training) == {1}
    assert set(threads_seen[len(training) :]) == {1}
    assert torch.get_num_threads() == before
    assert _openmp_threads() == openmp


def test_the_setting_is_restored_when_a_fit_fails(monkeypatch, two_torch_threads):
    X, y = _data()
    during = []

    def broken(self, X):
        during.append(torch.get_num_threads())
        raise RuntimeError("boom")

    monkeypatch.setattr(LinearProbeModule, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        LinearProbeClassifier(device="cpu").fit(X, y)
    assert during == [1]  # the setting was changed, then restored
    assert torch.get_num_threads() == 2


_worker_calls = threading.local()


def _record_forward_threads():
    """Make the linear probe's forward pass note torch's thread count in a
    list of the calling thread's (where one is open); idempotent, so that a
    loky worker installs it once."""
    forward = LinearProbeModule.forward
    if getattr(forward, "records_threads", False):
        return

    def spy(self, X):
        seen = getattr(_worker_calls, "seen", None)
        if seen is not None:
            seen.append(torch.get_num_threads())
        return forward(self, X)

    spy.records_threads = True
    LinearProbeModule.forward = spy


def _fit_in_worker(X, y):
    """A fit in a worker that runs two torch threads: its count before and
    after, the counts its forward passes saw, its probabilities."""
    _record_forward_threads()
    torch.set_num_threads(2)
    before = torch.get_num_threads()
    _worker_calls.seen = []
    try:
        clf = LinearProbeClassifier(device="cpu", random_state=0).fit(X, y)
        seen = list(_worker_calls.seen)
    finally:
        _worker_calls.seen = None
    return before, torch.get_num_threads(), seen, clf.predict_proba(X)


@pytest.mark.parametrize("backend", ["threading", "loky"])
def test_joblib_workers_keep_their_setting_and_learn_the_same_model(
    backend, monkeypatch
):
    X, y = _data()
    serial = LinearProbeClassifier(device="cpu", random_state=0).fit(X, y)
    # The spy in this process (the threading backend) goes with the test.
    monkeypatch.setattr(LinearProbeModule, "forward", LinearProbeModule.forward)
    with parallel_config(backend=backend, n_jobs=2):
        results = Parallel()(delayed(_fit_in_worker)(X, y) for _ in range(4))
    for before, after, seen, proba in results:
        assert before == after == 2
        assert seen and set(seen) == {1}
        # One thread everywhere: the same floats in any worker.
        np.testing.assert_array_equal(proba, serial.predict_proba(X))


def test_the_override_keeps_or_sets_the_count(monkeypatch, threads_seen):
    X, y = _data()
    monkeypatch.setenv(HEAD_THREADS_VARIABLE, "0")  # torch's own setting
    LinearProbeClassifier(device="cpu").fit(X, y)
    assert set(threads_seen) == {torch.get_num_threads()}
    threads_seen.clear()
    monkeypatch.setenv(HEAD_THREADS_VARIABLE, "3")
    LinearProbeClassifier(device="cpu").fit(X, y)
    assert set(threads_seen) == {3}


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_bad_override_is_refused_by_name(monkeypatch, value):
    X, y = _data()
    monkeypatch.setenv(HEAD_THREADS_VARIABLE, value)
    with pytest.raises(ValueError, match=f"{HEAD_THREADS_VARIABLE}='{value}'"):
        LinearProbeClassifier(device="cpu").fit(X, y)


def _adapter_proba(seed, X, y):
    from sklearn_clip import CLIPAdapterClassifier

    text = np.eye(3, 16)
    clf = CLIPAdapterClassifier(
        text_features=text, batch_size=8, max_epochs=15, device="cpu", random_state=seed
    )
    return clf.fit(X, y).predict_proba(X)


@pytest.mark.filterwarnings("ignore::sklearn_clip.CLIPModelMismatchWarning")
def test_concurrent_fits_in_threads_learn_what_they_learn_alone():
    # Random initialisation and mini-batch shuffling: each fit draws from
    # its own seeded stream, never from torch's process-wide one that a
    # concurrent fit is drawing from too.
    X, y = _data()
    alone = {seed: _adapter_proba(seed, X, y) for seed in range(3)}
    with parallel_config(backend="threading", n_jobs=3):
        together = Parallel()(
            delayed(_adapter_proba)(seed, X, y) for _ in range(4) for seed in range(3)
        )
    for i, proba in enumerate(together):
        np.testing.assert_array_equal(proba, alone[i % 3])
    assert not np.array_equal(alone[0], alone[1])  # the seeds do matter
