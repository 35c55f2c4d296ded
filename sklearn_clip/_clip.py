"""Loading frozen open_clip models through one process-wide cache.

Estimators take the CLIP model *by name* and call :func:`load_clip` when they
need it, so cloning an estimator is cheap and pickles never contain weights.
"""

import contextlib
import logging
import os
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any, NamedTuple

import open_clip
import torch

from ._torch_utils import resolve_device
from ._warnings import warn

TINY_MODEL = "sklearn-clip-tiny"

_CONFIG_DIR = Path(__file__).parent / "_configs"
# Registered at import so that joblib/loky workers, which import the package
# but not the user's ``__main__``, can build the tiny model too.
for _config in sorted(_CONFIG_DIR.glob("*.json")):
    open_clip.add_model_config(_config)


class CLIPWeightsUnavailableError(RuntimeError):
    """Raised when pretrained CLIP weights can be neither found nor downloaded."""


class LoadedCLIP(NamedTuple):
    """A frozen CLIP model with what is needed to use it.

    Attributes
    ----------
    model : torch.nn.Module
        The open_clip model in eval mode with ``requires_grad=False``.
    preprocess : callable
        open_clip's evaluation transform (PIL image -> normalised tensor).
    tokenizer : callable
        open_clip's tokenizer for this model.
    device : torch.device
        Where the model lives.
    image_size : tuple of int
        ``(height, width)`` of the model input.
    """

    model: Any
    preprocess: Any
    tokenizer: Any
    device: torch.device
    image_size: tuple


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def embedding_dim(model):
    """Width of a CLIP model's embeddings, from its open_clip configuration."""
    config = open_clip.get_model_config(model)
    if config is None:
        raise ValueError(f"Unknown CLIP model {model!r} (see open_clip.list_models()).")
    return int(config["embed_dim"])


def _check_model_name(model):
    if model not in open_clip.list_models():
        raise ValueError(
            f"Unknown CLIP model {model!r}. Known open_clip models include "
            f"{', '.join(open_clip.list_models()[:8])}, ... "
            "(see open_clip.list_models())."
        )


def _create(model, pretrained, device):
    if pretrained is None:
        warn(
            f"pretrained=None: CLIP model {model!r} has random weights; "
            "its embeddings carry no meaning beyond tests and speed checks.",
            UserWarning,
        )
        # Fixed seed: the same random model in every process and test order.
        # open_clip's own "initialized randomly" log line repeats the warning.
        with torch.random.fork_rng(devices=[]), _quiet_logs():
            torch.manual_seed(0)
            return open_clip.create_model_and_transforms(model, device=device)

    pretrained = os.fspath(pretrained)
    is_file = os.path.isfile(pretrained)
    if not is_file and pretrained not in open_clip.list_pretrained_tags_by_model(model):
        raise ValueError(
            f"pretrained={pretrained!r} is neither an existing checkpoint file nor "
            f"a known tag for CLIP model {model!r}. Known tags: "
            f"{open_clip.list_pretrained_tags_by_model(model)}."
        )
    if is_file:
        return open_clip.create_model_and_transforms(
            model, pretrained=pretrained, device=device
        )
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if _is_downloaded(cfg):
        # Served from the local cache: no network request at all.
        with _hub_offline():
            return open_clip.create_model_and_transforms(
                model, pretrained=pretrained, device=device
            )
    source = _download_source(cfg)
    if _offline_requested():
        raise _unavailable(model, pretrained, "HF_HUB_OFFLINE is set")
    if not _reachable(source):
        # Fail in seconds instead of minutes of retries with backoff.
        raise _unavailable(model, pretrained, f"{source} is unreachable")
    try:
        return open_clip.create_model_and_transforms(
            model, pretrained=pretrained, device=device
        )
    except (RuntimeError, OSError) as exc:
        raise _unavailable(model, pretrained, f"the download failed: {exc}") from exc


def _unavailable(model, pretrained, why):
    return CLIPWeightsUnavailableError(
        f"Could not get the weights of CLIP model {model!r} with pretrained tag "
        f"{pretrained!r}: {why}, and they are not in the local cache. "
        f"{_where_to_get(model, pretrained)} Then pass the file's path: "
        f"pretrained='/path/to/that/file' (and model={model!r}). On a machine "
        "without internet, set HF_HUB_OFFLINE=1 so that checkpoints already in "
        "the Hugging Face cache load without any network attempt."
    )


def _where_to_get(model, pretrained):
    """Where a machine with internet access gets this checkpoint as a file."""
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    repo = (cfg.get("hf_hub") or "").strip("/")
    if repo:
        return (
            "On a machine with internet access, download the checkpoint file "
            f"from https://huggingface.co/{repo} (open_clip_model.safetensors, "
            "or open_clip_pytorch_model.bin), for example with `hf download "
            f"{repo} open_clip_model.safetensors --local-dir .`, and copy it here."
        )
    return (
        "On a machine with internet access, download the checkpoint file from "
        f"{cfg.get('url')} and copy it here."
    )


def _offline_requested():
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {
        "1",
        "true",
        "yes",
        "on",
    }


@contextlib.contextmanager
def _hub_offline():
    """Hugging Face Hub calls inside are answered from the local cache only
    (``huggingface_hub`` reads this flag at call time).
    """
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip then downloads by URL
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _is_downloaded(cfg):
    """Whether the checkpoint of a pretrained config is already on disk."""
    if cfg.get("hf_hub") and open_clip.pretrained.has_hf_hub():
        try:
            with _hub_offline(), _quiet_logs():
                return bool(open_clip.pretrained.download_pretrained(cfg))
        except Exception:  # noqa: BLE001 - any failure means "not cached"
            return False
    url = cfg.get("url", "")
    if not url:
        return False
    cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    return cached.is_file()


def _download_source(cfg):
    if cfg.get("hf_hub") and open_clip.pretrained.has_hf_hub():
        from huggingface_hub import constants

        return constants.ENDPOINT
    return cfg.get("url", "")


def _reachable(url, timeout=3.0):
    """One TCP connection to the host of ``url``, with a short timeout."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _quiet_logs():
    """Silence the hub's and open_clip's log lines for a lookup that is
    allowed to fail.
    """
    logger = logging.getLogger()
    hub_logger = logging.getLogger("huggingface_hub")
    saved = logger.level, hub_logger.level
    logger.setLevel(logging.ERROR)
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        hub_logger.setLevel(saved[1])


def load_clip(model="ViT-B-32", pretrained="laion2b_s34b_b79k", device="auto"):
    """Load a frozen open_clip model once per process and return it.

    Parameters
    ----------
    model : str, default="ViT-B-32"
        open_clip architecture name, e.g. ``"ViT-B-32"`` or the tiny
        ``"sklearn-clip-tiny"`` test model shipped with this package.
    pretrained : str, path or None, default="laion2b_s34b_b79k"
        An open_clip pretrained tag (``"openai"``, ``"laion2b_s34b_b79k"``,
        ...), the path to a local checkpoint file, or ``None`` for random
        weights (a warning says so).
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA when available, else CPU.

    Returns
    -------
    LoadedCLIP
        Named tuple ``(model, preprocess, tokenizer, device, image_size)``.
        The model is shared: do not modify it.

    Raises
    ------
    CLIPWeightsUnavailableError
        If the weights of a pretrained tag cannot be downloaded; the message
        explains how to pass a local checkpoint path instead.

    Examples
    --------
    >>> from sklearn_clip import load_clip
    >>> clip = load_clip("sklearn-clip-tiny", pretrained=None, device="cpu")
    >>> clip.image_size
    (64, 64)
    """
    _check_model_name(model)
    resolved = resolve_device(device)
    key = (model, None if pretrained is None else os.fspath(pretrained), str(resolved))
    with _CACHE_LOCK:
        if key not in _CACHE:
            clip_model, _, preprocess = _create(model, pretrained, resolved)
            clip_model.eval()
            clip_model.requires_grad_(False)
            if resolved.type == "cuda":  # faster convolutions on tensor cores
                clip_model.to(memory_format=torch.channels_last)
            size = clip_model.visual.image_size
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            _CACHE[key] = LoadedCLIP(
                model=clip_model,
                preprocess=preprocess,
                tokenizer=open_clip.get_tokenizer(model),
                device=resolved,
                image_size=size,
            )
        return _CACHE[key]


def quantized_image_encoder(model="ViT-B-32", pretrained="laion2b_s34b_b79k"):
    """The CPU image encoder of a CLIP model with dynamic int8 Linear layers.

    A quantised copy of ``model.visual`` (the shared float model is not
    touched), built once per process. Matrix products of the Linear layers
    run in int8 with per-batch activation scales: about 1.7x faster on
    ViT-B-32 on an AVX-512 CPU, embeddings at cosine >= 0.999 to float32
    (``benchmarks/featurizer.py``).
    """
    key = (model, None if pretrained is None else os.fspath(pretrained), "cpu", "int8")
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is None:
        visual = load_clip(model, pretrained, "cpu").model.visual
        # torch.ao.quantization is deprecated in favour of torchao, which is
        # not a dependency; the eager dynamic path still works. (Its
        # DeprecationWarning is hidden by Python's default filters; changing
        # the filters here would not be thread-safe.)
        cached = torch.ao.quantization.quantize_dynamic(
            visual, {torch.nn.Linear}, dtype=torch.qint8, inplace=False
        )
        cached.eval()
        with _CACHE_LOCK:
            _CACHE.setdefault(key, cached)
    return cached


def clear_clip_cache():
    """Drop every cached CLIP model (frees its memory once unreferenced)."""
    with _CACHE_LOCK:
        _CACHE.clear()
