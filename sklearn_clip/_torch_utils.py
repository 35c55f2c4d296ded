"""torch utilities shared by every estimator: devices, precision, seeding."""

import contextlib

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


@contextlib.contextmanager
def seeded_torch(random_state):
    """Seed torch (initialisation, shuffling) from ``random_state`` without
    touching the caller's global RNG state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw_seed(random_state))
        yield
