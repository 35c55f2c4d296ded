"""torch utilities shared by every estimator: devices, precision, seeding,
intra-op threads.
"""

import contextlib
import os
import threading

import numpy as np
import torch
from sklearn.utils import check_random_state

from ._warnings import warn


def resolve_device(device="auto"):
    """Turn a device spec into a :class:`torch.device`.

    ``"auto"`` means CUDA when available, else CPU. Estimators store the
    spec verbatim and call this at use time, so a model fitted with
    ``device="auto"`` on a GPU machine still runs on a CPU-only one.

    Parameters
    ----------
    device : str, torch.device or None, default="auto"
        ``"auto"`` (or None), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...

    Returns
    -------
    torch.device
        The resolved device; a CUDA device without CUDA raises ``ValueError``.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available; "
            "use device='auto' or device='cpu'."
        )
    return resolved


def loading_device(device="auto"):
    """:func:`resolve_device` for rebuilding a stored estimator: a CUDA device
    this machine lacks becomes the CPU, with a warning, so that a model
    fitted on a GPU loads anywhere.
    """
    try:
        return resolve_device(device)
    except ValueError:
        warn(
            f"device={device!r} is not available on this machine; the loaded "
            "estimator runs on the CPU (set_params(device='cpu') to silence this).",
            UserWarning,
        )
        return torch.device("cpu")


def resolve_precision(device, precision="auto"):
    """``"auto"`` -> ``"bf16"`` on CUDA, ``"fp32"`` elsewhere; others as given."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(
            f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}"
        )
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device, precision="auto"):
    """Context manager for inference in the requested precision.

    ``"auto"`` is bfloat16 autocast on CUDA (fp16 overflows in CLIP's text
    encoder are a known failure mode) and float32 on CPU, where low precision
    is slower, not faster.
    """
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def draw_seed(random_state):
    """An int seed drawn from a scikit-learn ``random_state``."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


#: torch's global random generator is one per process: a thread seeding it
#: and drawing from it must not interleave with another doing the same.
_GLOBAL_RNG_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded_torch(random_state):
    """Seed torch's global RNG from ``random_state`` for the block (module
    initialisation) and restore the caller's RNG state afterwards; one
    thread at a time. Keep the block short: concurrent fits wait for it.
    Training draws from its own :func:`torch_generator` instead.
    """
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw_seed(random_state))
        yield


@contextlib.contextmanager
def global_rng_untouched():
    """Run a block that may draw from torch's global RNG (building a module
    whose weights are then overwritten) without changing the RNG state that
    this or any other thread sees.
    """
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        yield


def torch_generator(random_state):
    """A CPU ``torch.Generator`` seeded from ``random_state``: the random
    stream of one fit (shuffling, random patches), shared with no other
    thread.
    """
    return torch.Generator().manual_seed(draw_seed(random_state))


#: Environment variable overriding :func:`head_threads`' count.
HEAD_THREADS_VARIABLE = "SKLEARN_CLIP_HEAD_THREADS"


def head_thread_count():
    """Intra-op threads for training and evaluating heads on the CPU: 1,
    or ``SKLEARN_CLIP_HEAD_THREADS`` (a positive int; ``0`` keeps torch's
    own setting, returned as None).
    """
    value = os.environ.get(HEAD_THREADS_VARIABLE, "").strip()
    if not value:
        return 1
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError(
            f"{HEAD_THREADS_VARIABLE}={value!r}: give a number of threads "
            "(1, 2, ...) or 0 to keep torch's own setting."
        )
    return count or None


@contextlib.contextmanager
def head_threads(device):
    """Run a head's training or evaluation on ``device`` with
    :func:`head_thread_count` intra-op threads in the calling thread, and
    restore that thread's setting afterwards.

    Why: a head's steps are many small tensor operations, each one an OpenMP
    parallel region. With several threads, every region ends at a barrier
    where libgomp's threads spin-wait; when other processes share the cores,
    the thread doing the work is descheduled while its partner spins, and a
    fit becomes 5-40 times slower (one thread: 2-3 times, the fair share;
    ``benchmarks/heads.py --load``). One thread also makes the result
    independent of the machine's core count, of ``n_jobs`` and of the joblib
    backend. torch's thread count is per OS thread (OpenMP's), so concurrent
    fits in joblib threads each set and restore their own. CUDA devices are
    left alone.
    """
    count = head_thread_count() if device.type == "cpu" else None
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
