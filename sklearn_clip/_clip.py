"""Loading frozen open_clip models through one process-wide cache.

Estimators take the CLIP model *by name* and call :func:`load_clip` when they
need it, so cloning an estimator is cheap and pickles never contain weights.
"""

import contextlib
import difflib
import json
import logging
import os
import socket
import threading
import urllib.parse
from pathlib import Path

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
    """Raised when pretrained CLIP weights (or a tokenizer's files) can be
    neither found nor downloaded.

    ``str(error)`` gives the remedy in Python terms (``pretrained=...``);
    :meth:`for_command_line` gives it in the command line's (``--pretrained``).

    Parameters
    ----------
    message : str
        What could not be found, and where it was looked for.
    python_remedy : str, default=""
        What to do, in Python's terms.
    cli_remedy : str, default=""
        What to do, in the command line's terms (``python_remedy`` if empty).
    """

    def __init__(self, message, *, python_remedy="", cli_remedy=""):
        super().__init__(f"{message} {python_remedy}".strip())
        self.cli_message = f"{message} {cli_remedy or python_remedy}".strip()

    def for_command_line(self):
        """The message with the remedy as command-line options.

        Returns
        -------
        str
            The message, its remedy spelled as ``sklearn-clip`` options.
        """
        return self.cli_message


#: Parameters of the image preprocessing a user may set (open_clip's names).
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
_INTERPOLATIONS = ("bicubic", "bilinear")
_RESIZE_MODES = ("shortest", "longest", "squash")

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"


class LoadedCLIP:
    """A frozen CLIP model with what is needed to use it.

    The tokenizer and the image preprocessing are built on first use: image
    work never needs a text tokenizer (SigLIP's needs ``transformers`` and
    its files from the Hugging Face Hub), and text work never needs the
    image preprocessing.

    Attributes
    ----------
    model : torch.nn.Module
        The open_clip model in eval mode with ``requires_grad=False``.
    preprocess : callable
        The evaluation transform (PIL image -> normalised tensor) of these
        weights: see :func:`load_clip`'s ``preprocess``.
    preprocess_config : dict
        ``mean``, ``std``, ``interpolation``, ``resize_mode`` and ``size`` of
        that transform.
    tokenizer : callable
        open_clip's tokenizer for this model.
    device : torch.device
        Where the model lives.
    image_size : tuple of int
        ``(height, width)`` of the model input.
    """

    def __init__(self, model, device, image_size, *, name, pretrained, preprocess):
        self.model = model
        self.device = device
        self.image_size = image_size
        self._name = name
        self._pretrained = pretrained
        self._preprocess_choice = preprocess
        self._lock = threading.Lock()
        # Building a tokenizer may wait on the network: not under _lock.
        self._tokenizer_lock = threading.Lock()
        self._preprocess_config = None
        self._preprocess = None
        self._tokenizer = None

    @property
    def preprocess_config(self):
        with self._lock:
            if self._preprocess_config is None:
                self._preprocess_config = resolve_preprocess(
                    self._name, self._pretrained, self._preprocess_choice, self.model
                )
            return dict(self._preprocess_config)

    @property
    def preprocess(self):
        config = self.preprocess_config
        with self._lock:
            if self._preprocess is None:
                from open_clip.transform import PreprocessCfg, image_transform_v2

                self._preprocess = image_transform_v2(
                    PreprocessCfg(**config), is_train=False
                )
            return self._preprocess

    @property
    def tokenizer(self):
        with self._tokenizer_lock:
            if self._tokenizer is None:
                self._tokenizer = _load_tokenizer(self._name)
            return self._tokenizer


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def model_schema(model):
    """``("hf-hub", repo)``, ``("local-dir", folder)`` or ``(None, model)``."""
    if model.startswith(HF_HUB_PREFIX):
        return "hf-hub", model[len(HF_HUB_PREFIX) :]
    if model.startswith(LOCAL_DIR_PREFIX):
        return "local-dir", model[len(LOCAL_DIR_PREFIX) :]
    return None, model


def embedding_dim(model):
    """Width of a CLIP model's embeddings, from its open_clip configuration."""
    return int(model_config(model)["embed_dim"])


def model_config(model, *, local_only=False):
    """The open_clip model configuration of a name, ``hf-hub:`` repository
    (read from the local Hugging Face cache when it is there, with no network
    request; only from there with ``local_only``) or ``local-dir:`` folder.
    """
    schema, identifier = model_schema(model)
    if schema == "local-dir":
        return _folder_config(identifier)["model_cfg"]
    if schema == "hf-hub" and local_only:
        from huggingface_hub import hf_hub_download

        with _hub_offline(), _quiet_logs():
            path = hf_hub_download(repo_id=identifier, filename="open_clip_config.json")
        return json.loads(Path(path).read_text(encoding="utf-8"))["model_cfg"]
    if schema == "hf-hub":
        return _hub_config(identifier)["model_cfg"]
    _check_model_name(model)
    return open_clip.get_model_config(model)


def _folder_config(folder):
    folder = Path(folder).expanduser()
    path = folder / "open_clip_config.json"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"local-dir:{folder}: no such folder. A local-dir: model is a folder "
            "holding open_clip_config.json and the weights (for example "
            "open_clip_model.safetensors), as published on the Hugging Face Hub."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"local-dir:{folder} has no open_clip_config.json: a local-dir: model "
            "is a folder holding open_clip_config.json (model_cfg and "
            "preprocess_cfg) and the weights, as published on the Hugging Face "
            "Hub (`hf download REPO --local-dir FOLDER`)."
        )
    config = json.loads(path.read_text(encoding="utf-8"))
    if "model_cfg" not in config:
        raise ValueError(f"{path} has no 'model_cfg' entry: not an open_clip config.")
    return config


def _hub_file(repo, filename, what):
    """The path of ``filename`` of a Hub repository: from the local cache
    without any network request, else downloaded, failing in seconds with
    :class:`CLIPWeightsUnavailableError` when offline.
    """
    from huggingface_hub import hf_hub_download

    with _hub_offline(), _quiet_logs():
        try:
            return hf_hub_download(repo_id=repo, filename=filename)
        except Exception:  # noqa: BLE001 - not in the cache: download below
            pass
    from huggingface_hub import constants

    why = None
    if _offline_requested():
        why = "HF_HUB_OFFLINE is set"
    elif not _reachable(constants.ENDPOINT):
        why = f"{constants.ENDPOINT} is unreachable"
    if why is None:
        try:
            return hf_hub_download(repo_id=repo, filename=filename)
        except Exception as exc:  # noqa: BLE001 - any failure: one clear error
            why = f"the download failed: {exc}"
    raise CLIPWeightsUnavailableError(
        f"Could not get {what} of 'hf-hub:{repo}' ({filename}): {why}, and it is "
        "not in the local Hugging Face cache. On a machine with internet access, "
        f"download the repository (`hf download {repo} --local-dir FOLDER`) and "
        "copy the folder here.",
        python_remedy="Then pass model='local-dir:FOLDER'. On a machine without "
        "internet, set HF_HUB_OFFLINE=1 so that files already in the Hugging Face "
        "cache load without any network attempt.",
        cli_remedy="Then pass --model local-dir:FOLDER. On a machine without "
        "internet, set HF_HUB_OFFLINE=1 so that files already in the Hugging Face "
        "cache load without any network attempt.",
    )


def _hub_config(repo):
    path = _hub_file(repo, "open_clip_config.json", "the configuration")
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    if "model_cfg" not in config:
        raise ValueError(f"hf-hub:{repo}'s open_clip_config.json has no 'model_cfg'.")
    return config


def _hub_weights(repo):
    """The checkpoint file of a Hub repository, as open_clip would choose it."""
    errors = []
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        try:
            return _hub_file(repo, name, "the weights")
        except CLIPWeightsUnavailableError as exc:
            errors.append(exc)
    raise errors[0]


def _folder_weights(folder):
    checkpoint = open_clip.factory._find_checkpoint_in_dir(Path(folder).expanduser())
    if checkpoint is None:
        raise FileNotFoundError(
            f"local-dir:{folder} holds no weights (*.safetensors, *.bin or *.pth "
            "next to open_clip_config.json)."
        )
    return checkpoint


def weights_file(model, pretrained):
    """The local checkpoint file that holds the weights, or None for an
    open_clip tag or random weights. What identifies the weights in caches.
    """
    schema, identifier = model_schema(model)
    if pretrained is None:
        return None
    if schema == "local-dir":
        return _folder_weights(identifier)
    if schema == "hf-hub":
        return _hub_weights(identifier)
    pretrained = os.fspath(pretrained)
    return pretrained if os.path.isfile(pretrained) else None


def _check_model_name(model):
    schema, identifier = model_schema(model)
    if schema == "local-dir":
        _folder_config(identifier)
        return
    if schema == "hf-hub":
        if not identifier.strip("/"):
            raise ValueError(f"{model!r}: give a repository, e.g. 'hf-hub:ORG/NAME'.")
        return
    known = open_clip.list_models()
    if model not in known:
        close = difflib.get_close_matches(model, known, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Unknown CLIP model {model!r}.{hint} Known open_clip models include "
            f"{', '.join(known[:8])}, ... (see open_clip.list_models()); "
            "'hf-hub:ORG/NAME' and 'local-dir:FOLDER' name models published on "
            "the Hugging Face Hub."
        )


def _create(model, pretrained, device):
    """The open_clip model with these weights (its transforms are built
    separately, see :func:`resolve_preprocess`).
    """
    schema, identifier = model_schema(model)
    if pretrained is None:
        warn(
            f"pretrained=None: CLIP model {model!r} has random weights; "
            "its embeddings carry no meaning beyond tests and speed checks.",
            UserWarning,
        )
        if schema is not None:
            model_config(model)  # a clear error when the config is missing
        # Fixed seed: the same random model in every process and test order.
        # open_clip's own "initialized randomly" log line repeats the warning.
        with torch.random.fork_rng(devices=[]), _quiet_logs(), _hub_offline():
            torch.manual_seed(0)
            return open_clip.create_model(model, load_weights=False, device=device)

    if schema is not None:
        model_config(model)
        # open_clip would go on with random weights, logging a line, when a
        # repository has no weights file: check first, then load offline.
        weights_file(model, pretrained)
        with _hub_offline(), _quiet_logs():
            return open_clip.create_model(model, device=device)

    pretrained = os.fspath(pretrained)
    is_file = os.path.isfile(pretrained)
    if not is_file and pretrained not in open_clip.list_pretrained_tags_by_model(model):
        tags = open_clip.list_pretrained_tags_by_model(model)
        close = difflib.get_close_matches(pretrained, tags, n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"pretrained={pretrained!r} is neither an existing checkpoint file nor "
            f"a known tag for CLIP model {model!r}.{hint} Known tags: {tags}."
        )
    if is_file:
        return open_clip.create_model(model, pretrained=pretrained, device=device)
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if _is_downloaded(cfg):
        # Served from the local cache: no network request at all.
        with _hub_offline():
            return open_clip.create_model(model, pretrained=pretrained, device=device)
    source = _download_source(cfg)
    if _offline_requested():
        raise _unavailable(model, pretrained, "HF_HUB_OFFLINE is set")
    if not _reachable(source):
        # Fail in seconds instead of minutes of retries with backoff.
        raise _unavailable(model, pretrained, f"{source} is unreachable")
    try:
        return open_clip.create_model(model, pretrained=pretrained, device=device)
    except (RuntimeError, OSError) as exc:
        raise _unavailable(model, pretrained, f"the download failed: {exc}") from exc


def _unavailable(model, pretrained, why):
    offline = (
        "On a machine without internet, set HF_HUB_OFFLINE=1 so that checkpoints "
        "already in the Hugging Face cache load without any network attempt."
    )
    return CLIPWeightsUnavailableError(
        f"Could not get the weights of CLIP model {model!r} with pretrained tag "
        f"{pretrained!r}: {why}, and they are not in the local cache. "
        f"{_where_to_get(model, pretrained)}",
        python_remedy="Then pass the file's path: pretrained='/path/to/that/file' "
        f"(and model={model!r}). {offline} To try the package out without "
        "weights, pretrained=None gives random weights (meaningless embeddings).",
        cli_remedy=f"Then pass the file's path: --pretrained PATH (and --model "
        f"{model}). {offline} To try the package out without weights, "
        "--pretrained none gives random weights (meaningless embeddings).",
    )


def check_preprocess(preprocess):
    """Validate a ``preprocess`` parameter; return it in a canonical,
    hashable form: None, a tag, or a sorted tuple of ``(key, value)`` pairs.
    """
    if preprocess is None or isinstance(preprocess, str):
        return preprocess
    if not isinstance(preprocess, dict):
        raise TypeError(
            "preprocess must be None, a pretrained tag whose preprocessing to "
            "copy, or a dict with 'mean' and 'std' (and optionally "
            f"'interpolation', 'resize_mode'); got {preprocess!r}."
        )
    unknown = sorted(set(preprocess) - set(PREPROCESS_KEYS))
    missing = [key for key in ("mean", "std") if key not in preprocess]
    if unknown or missing:
        raise ValueError(
            f"preprocess={preprocess!r}: "
            + (f"unknown keys {unknown}; " if unknown else "")
            + (f"missing {missing}; " if missing else "")
            + f"the keys are {list(PREPROCESS_KEYS)}, 'mean' and 'std' required."
        )
    values = {}
    for key in ("mean", "std"):
        try:
            triple = tuple(float(v) for v in preprocess[key])
        except TypeError:
            triple = ()
        if len(triple) != 3 or (key == "std" and min(triple) <= 0):
            raise ValueError(
                f"preprocess[{key!r}] must be three numbers (R, G, B)"
                + (", all positive" if key == "std" else "")
                + f"; got {preprocess[key]!r}."
            )
        values[key] = triple
    for key, options in (
        ("interpolation", _INTERPOLATIONS),
        ("resize_mode", _RESIZE_MODES),
    ):
        value = preprocess.get(key, "bicubic" if key == "interpolation" else "shortest")
        if value not in options:
            raise ValueError(
                f"preprocess[{key!r}] must be one of {list(options)}; got {value!r}."
            )
        values[key] = value
    return tuple(sorted(values.items()))


def _tag_preprocess(model, tag):
    cfg = open_clip.get_pretrained_cfg(model, tag)
    return {key: _hashable(cfg[key]) for key in PREPROCESS_KEYS if key in cfg}


def _hashable(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def published_preprocess(model):
    """``{tag: preprocessing}`` of every pretrained tag of a built-in model,
    each with open_clip's defaults filled in.
    """
    from open_clip.transform import PreprocessCfg

    defaults = {
        key: _hashable(getattr(PreprocessCfg(), key)) for key in PREPROCESS_KEYS
    }
    return {
        tag: {**defaults, **_tag_preprocess(model, tag)}
        for tag in open_clip.list_pretrained_tags_by_model(model)
    }


def resolve_preprocess(model, pretrained, preprocess, clip_model):
    """The preprocessing of these weights, as open_clip's ``PreprocessCfg``
    fields.

    - ``preprocess`` given: a tag of ``model`` (its preprocessing is copied)
      or a dict ``mean``, ``std``, ``interpolation``, ``resize_mode``.
    - a tag, an ``hf-hub:`` or a ``local-dir:`` model: their own
      configuration (open_clip set it on the model).
    - a checkpoint file (or random weights): the preprocessing published
      for ``model`` when all its tags agree (open_clip's defaults when it
      has none); a ``ValueError`` when they differ.
    """
    config = dict(clip_model.visual.preprocess_cfg)
    schema, _ = model_schema(model)
    choice = check_preprocess(preprocess)
    if isinstance(choice, str):
        if schema is not None:
            raise ValueError(
                f"preprocess={choice!r} names a pretrained tag, but {model!r} has "
                "no tags: give a dict with 'mean', 'std', 'interpolation' and "
                "'resize_mode' instead."
            )
        published = published_preprocess(model)
        if choice not in published:
            raise ValueError(
                f"preprocess={choice!r} is not a pretrained tag of CLIP model "
                f"{model!r}; its tags: {sorted(published)}."
            )
        config.update(published[choice])
    elif choice is not None:
        config.update(dict(choice))
    elif schema is None and not _is_tag(model, pretrained):
        published = published_preprocess(model)
        distinct = {tuple(sorted(p.items())) for p in published.values()}
        if len(distinct) > 1:
            groups = {}
            for tag, p in published.items():
                groups.setdefault(tuple(sorted(p.items())), []).append(tag)
            described = "; ".join(f"{tags} use {dict(p)}" for p, tags in groups.items())
            raise ValueError(
                f"CLIP model {model!r} has tags with different image "
                f"preprocessing, so the preprocessing of a checkpoint file "
                f"({pretrained!r}) is unknown: {described}. Name it with "
                "preprocess=TAG (the tag the weights come from, or one "
                "preprocessed alike) or preprocess={'mean': (...), 'std': (...), "
                "'interpolation': ..., 'resize_mode': ...}; on the command line "
                "--preprocess TAG or --preprocess '{\"mean\": [...], ...}'."
            )
        if distinct:
            config.update(dict(distinct.pop()))
    for key in ("mean", "std"):
        config[key] = tuple(config[key])
    return config


def _is_tag(model, pretrained):
    return pretrained is not None and not os.path.isfile(os.fspath(pretrained))


def _load_tokenizer(model):
    """open_clip's tokenizer for ``model``, with clear errors when it needs
    ``transformers`` or files from the Hugging Face Hub that are missing.
    """
    schema, _ = model_schema(model)
    if schema == "hf-hub":
        model_config(model)  # the config from the cache, or a clear error
    try:
        with _hub_offline(), _quiet_logs():
            return open_clip.get_tokenizer(model)
    except ImportError as exc:
        raise ImportError(
            f"The text tokenizer of CLIP model {model!r} needs the transformers "
            'package: pip install "sklearn-clip[transformers]". (Image embeddings '
            f"need no tokenizer.) ({exc})"
        ) from exc
    except Exception as first:  # noqa: BLE001 - not in the cache: try online
        cached_error = first
    if schema == "local-dir":
        # open_clip reads a local-dir: model's tokenizer from the folder only.
        raise FileNotFoundError(
            f"The text tokenizer of {model!r} is read from that folder, which "
            f"lacks its files ({cached_error}). Copy the tokenizer files of the "
            "Hugging Face repository (tokenizer.json, tokenizer_config.json, "
            "special_tokens_map.json, ...) into it. Image embeddings need no "
            "tokenizer."
        ) from cached_error
    from huggingface_hub import constants

    why = None
    if _offline_requested():
        why = "HF_HUB_OFFLINE is set"
    elif not _reachable(constants.ENDPOINT):
        why = f"{constants.ENDPOINT} is unreachable"
    if why is None:
        try:
            return open_clip.get_tokenizer(model)
        except Exception as exc:  # noqa: BLE001 - one clear error below
            why = f"loading it failed: {exc}"
    name = (model_config(model) or {}).get("text_cfg", {}).get("hf_tokenizer_name")
    where = f"the Hugging Face repository {name!r}" if name else "the Hugging Face Hub"
    raise CLIPWeightsUnavailableError(
        f"Could not get the text tokenizer of CLIP model {model!r} from {where}: "
        f"{why}, and it is not in the local Hugging Face cache ({cached_error}). "
        "Image embeddings need no tokenizer; class-name text does. On a machine "
        f"with internet access, run `hf download {name or 'REPO'}` once to fill "
        "the cache (HF_HOME), then copy the cache here; with HF_HUB_OFFLINE=1 "
        "set, files already in the cache load without any network attempt."
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


#: The pretrained tag estimators default to.
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


def load_clip(
    model="ViT-B-32", pretrained="laion2b_s34b_b79k", device="auto", *, preprocess=None
):
    """Load a frozen open_clip model once per process and return it.

    Parameters
    ----------
    model : str, default="ViT-B-32"
        open_clip architecture name, e.g. ``"ViT-B-32"`` or the tiny
        ``"sklearn-clip-tiny"`` test model shipped with this package; or a
        model published with its configuration: ``"hf-hub:ORG/NAME"`` (from
        the local Hugging Face cache when it is there, with no network
        request) or ``"local-dir:/path/to/folder"`` (a folder holding
        ``open_clip_config.json`` and the weights). For these two the weights
        come from there and ``pretrained`` is ignored (a value other than
        the default warns), except ``None``: random weights.
    pretrained : str, path or None, default="laion2b_s34b_b79k"
        An open_clip pretrained tag (``"openai"``, ``"laion2b_s34b_b79k"``,
        ...), the path to a local checkpoint file, or ``None`` for random
        weights (a warning says so).
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA when available, else CPU.
    preprocess : None, str or dict, default=None
        The image preprocessing. None: the weights' own -- a tag's, the
        ``hf-hub:``/``local-dir:`` configuration's, or for a checkpoint file
        the one published for ``model`` when all its tags agree (an error
        names the choices when they differ). A tag of ``model``: copy its
        preprocessing. A dict: ``mean`` and ``std`` (three numbers each),
        ``interpolation`` (``"bicubic"``, ``"bilinear"``) and
        ``resize_mode`` (``"shortest"``: resize and centre-crop,
        ``"squash"``: resize to the square, ``"longest"``: pad).

    Returns
    -------
    LoadedCLIP
        ``model``, ``preprocess``, ``tokenizer``, ``device``, ``image_size``.
        The model is shared: do not modify it. The tokenizer and the
        preprocessing are built on first use.

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
    choice = check_preprocess(preprocess)
    schema, _ = model_schema(model)
    if schema is not None and pretrained not in (None, DEFAULT_PRETRAINED):
        warn(
            f"pretrained={pretrained!r} is ignored: the weights of {model!r} come "
            "from its repository or folder.",
            UserWarning,
        )
        pretrained = DEFAULT_PRETRAINED
    resolved = resolve_device(device)
    key = (model, None if pretrained is None else os.fspath(pretrained), str(resolved))
    with _CACHE_LOCK:
        if key not in _CACHE:
            clip_model = _create(model, pretrained, resolved)
            clip_model.eval()
            clip_model.requires_grad_(False)
            if resolved.type == "cuda":  # faster convolutions on tensor cores
                clip_model.to(memory_format=torch.channels_last)
            _CACHE[key] = clip_model
        view_key = (*key, "view", choice)
        if view_key not in _CACHE:
            clip_model = _CACHE[key]
            size = clip_model.visual.image_size
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            _CACHE[view_key] = LoadedCLIP(
                clip_model,
                resolved,
                size,
                name=model,
                pretrained=pretrained,
                preprocess=preprocess,
            )
        return _CACHE[view_key]


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
