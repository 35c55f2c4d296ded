"""The thread policy of the heads: one intra-op thread while a head trains
or predicts on the CPU, the caller's setting restored afterwards, in the
main thread and in joblib workers."""

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


def _openmp_threads():
    return [(i["filepath"], i["num_threads"]) for i in threadpool_info()]


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs 2 torch threads")
def test_a_head_trains_and_predicts_with_one_thread_and_restores_the_setting(
    threads_seen,
):
    X, y = _data()
    before, openmp = torch.get_num_threads(), _openmp_threads()
    clf = LinearProbeClassifier(device="cpu", random_state=0).fit(X, y)
    training = list(threads_seen)
    clf.predict_proba(X)
    assert training and set(training) == {1}
    assert set(threads_seen[len(training) :]) == {1}
    assert torch.get_num_threads() == before
    assert _openmp_threads() == openmp


def test_the_setting_is_restored_when_a_fit_fails(monkeypatch):
    X, y = _data()
    before = torch.get_num_threads()

    def broken(self, X):
        raise RuntimeError("boom")

    monkeypatch.setattr(LinearProbeModule, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        LinearProbeClassifier(device="cpu").fit(X, y)
    assert torch.get_num_threads() == before


def _fit_in_worker(X, y):
    before = torch.get_num_threads()
    clf = LinearProbeClassifier(device="cpu", random_state=0).fit(X, y)
    return before, torch.get_num_threads(), clf.predict_proba(X)


@pytest.mark.parametrize("backend", ["threading", "loky"])
def test_joblib_workers_keep_their_setting_and_learn_the_same_model(backend):
    X, y = _data()
    serial = LinearProbeClassifier(device="cpu", random_state=0).fit(X, y)
    with parallel_config(backend=backend, n_jobs=2):
        results = Parallel()(delayed(_fit_in_worker)(X, y) for _ in range(4))
    for before, after, proba in results:
        assert after == before
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
