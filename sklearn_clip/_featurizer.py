"""CLIPFeaturizer: images in, CLIP image embeddings out."""

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from tqdm.auto import tqdm

from ._base import BaseCLIPEstimator
from ._clip import (
    check_preprocess,
    embedding_dim,
    load_clip,
    model_schema,
    quantized_image_encoder,
    weights_file,
)
from ._compat import Interval, StrOptions
from ._embedding_cache import (
    EmbeddingCache,
    checkpoint_identity,
    content_key,
    namespace_key,
)
from ._images import (
    AUTO_PROGRESS_MIN_BATCHES,
    ImageLoadError,
    RemoteFile,
    check_image_inputs,
    describe,
    is_url,
    iter_decoded,
    progress_shown,
    read_encoded,
    worker_processes_allowed,
)
from ._remote import DEFAULT_TIMEOUT, check_timeout, forget_hosts
from ._torch_utils import autocast, resolve_precision
from ._validation import DEVICE_CONSTRAINT, PRECISION_CONSTRAINT, PRETRAINED_CONSTRAINT
from ._warnings import warn

# Bump when the embedding pipeline changes, so that caches are not reused.
_EMBEDDING_VERSION = 1


class CLIPFeaturizer(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseCLIPEstimator
):
    """Embed images with a frozen CLIP image encoder.

    The CLIP model is given by name and loaded once per process through a
    shared cache (:func:`load_clip`); the featurizer itself holds no weights,
    so it clones and pickles cheaply. It learns nothing: ``fit`` only records
    the output width.

    Parameters
    ----------
    model : str, default="ViT-B-32"
        open_clip architecture name. ``"sklearn-clip-tiny"`` is a small
        random-weight model for tests and docs. ``"hf-hub:ORG/NAME"`` and
        ``"local-dir:FOLDER"`` name a model published with its configuration
        (see :func:`load_clip`).
    pretrained : str, path or None, default="laion2b_s34b_b79k"
        open_clip pretrained tag, path to a local checkpoint file, or ``None``
        for random weights.
    preprocess : None, str or dict, default=None
        The image preprocessing. None: the weights' own (a tag's, the
        ``hf-hub:``/``local-dir:`` configuration's, or for a checkpoint file
        the one published for ``model`` when all its tags agree; an error
        names the choices when they differ). A tag of ``model`` copies that
        tag's preprocessing; a dict gives ``mean`` and ``std`` (three numbers
        each) and optionally ``interpolation`` (``"bicubic"``,
        ``"bilinear"``) and ``resize_mode`` (``"shortest"``, ``"squash"``,
        ``"longest"``). Part of the embedding cache's key.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:1"``, ... Resolved each time the model is used.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Inference precision. ``"auto"`` is bfloat16 autocast on CUDA and
        float32 on CPU.
    batch_size : int, default=64
        Images per forward pass. On CUDA, a batch that runs out of memory is
        split in halves (with a warning) instead of failing.
    num_workers : int or "auto", default="auto"
        DataLoader worker processes decoding images while the model runs; 0
        decodes each batch with a pool of threads between forward passes.
        ``"auto"``: on CUDA up to 4 workers; on CPU only as many as there
        are cores beyond the model's threads (worker processes competing
        with the model for cores slow it down), often 0.
    normalize : bool, default=True
        L2-normalise each embedding (what CLIP's cosine similarity uses).
    progress : bool or "auto", default="auto"
        Show a tqdm progress bar; ``"auto"`` shows it on a terminal for runs
        of several batches.
    cache_dir : str, path or None, default=None
        Directory of a persistent embedding cache (SQLite, safe for several
        processes at once). Embeddings are keyed by model, weights,
        preprocessing, precision, normalisation and each image's *content*
        hash: a renamed file is not embedded again, an overwritten one is.
        Every finished batch is stored at once, so an interrupted run resumes
        where it stopped. Each file or URL is read once: the bytes hashed for
        its key are the bytes decoded (inputs are read a few batches ahead).
    on_error : {"raise", "nan"}, default="raise"
        What to do with inputs that cannot be read. ``"raise"``: one
        :class:`ImageLoadError` naming every bad item. ``"nan"``: their rows
        are NaN and a warning names them (see Notes).
    quantize : bool, default=False
        CPU only, opt-in: run the image encoder's Linear layers in dynamic
        int8 (about 1.7x faster for ViT-B-32 on an AVX-512 CPU; embeddings
        at cosine >= 0.999 to float32, see ``benchmarks/featurizer.py``).
        Embeddings differ slightly from float32 ones: do not mix the two in
        one training set.
    memmap_dir : str, path or None, default=None
        Write the embeddings of each ``transform`` call to a new
        memory-mapped ``.npy`` file in this directory and return it (for
        inputs whose embeddings do not fit in memory).
    storage_options : dict or None, default=None
        fsspec options (credentials, endpoint) for inputs given as URLs
        (``s3://``, ``gs://``, ``az://``, ``https://``, ...); None uses the
        filesystem's defaults (environment variables, config files).
    timeout : float or (float, float), default=30.0
        Seconds a read of a URL input may wait to connect and for each
        answer (a number for both, or a ``(connect, read)`` pair), for S3
        and HTTP(S) URLs where ``storage_options`` sets none. A read that
        fails transiently (timeout, connection, 5xx, throttling, refused
        credentials) is tried 3 times in all, with backoff.

    Attributes
    ----------
    embedding_dim_ : int
        Width of the embeddings.

    See Also
    --------
    ZeroShotClassifier : Classify the embeddings with class-name prompts.

    Notes
    -----
    X may mix file paths (``str`` or :class:`pathlib.Path`), URLs read through
    fsspec (in the decoding threads), :class:`ImageBytes` (an encoded file's
    bytes), PIL images and uint8 arrays of shape ``(H, W)``, ``(H, W, 1)``,
    ``(H, W, 3)`` or ``(H, W, 4)``. Images are converted to RGB (greyscale,
    palette, 16-bit, CMYK; transparency is composited on white) and EXIF
    orientation is applied. Inputs that cannot be read raise one :class:`ImageLoadError`
    (a ``ValueError``) listing every bad item. Rows are never dropped: a
    transformer inside a Pipeline cannot remove samples, because ``y`` is
    not passed through ``transform`` and would no longer line up with X.
    ``on_error="nan"`` keeps the rows as NaN instead, for workflows that drop
    them explicitly (``mask = ~np.isnan(X).any(axis=1)``) before training.

    Decoding holds O(``batch_size * num_workers``) images in memory, never
    all of them.

    References
    ----------
    .. [1] Radford et al., "Learning Transferable Visual Models From Natural
       Language Supervision", ICML 2021.
    .. [2] Cherti et al., "Reproducible scaling laws for contrastive
       language-image learning", CVPR 2023 (open_clip, LAION weights).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import CLIPFeaturizer
    >>> images = [np.full((32, 32, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    >>> featurizer = CLIPFeaturizer("sklearn-clip-tiny", pretrained=None, device="cpu")
    >>> embeddings = featurizer.fit_transform(images)
    >>> embeddings.shape
    (3, 64)
    """

    _fitted_attributes = ("embedding_dim_",)
    _parameter_constraints = {
        "model": [str],
        "pretrained": PRETRAINED_CONSTRAINT,
        "preprocess": [str, dict, None],
        "device": DEVICE_CONSTRAINT,
        "precision": PRECISION_CONSTRAINT,
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "num_workers": [
            Interval(Integral, 0, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "normalize": ["boolean"],
        "progress": ["boolean", StrOptions({"auto"})],
        "cache_dir": [str, os.PathLike, None],
        "on_error": [StrOptions({"raise", "nan"})],
        "quantize": ["boolean"],
        "memmap_dir": [str, os.PathLike, None],
        "storage_options": [dict, None],
        "timeout": [Interval(Real, 0, None, closed="neither"), tuple],
    }

    def __init__(
        self,
        model="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        *,
        preprocess=None,
        device="auto",
        precision="auto",
        batch_size=64,
        num_workers="auto",
        normalize=True,
        progress="auto",
        cache_dir=None,
        on_error="raise",
        quantize=False,
        memmap_dir=None,
        storage_options=None,
        timeout=DEFAULT_TIMEOUT,
    ):
        self.model = model
        self.pretrained = pretrained
        self.preprocess = preprocess
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.normalize = normalize
        self.progress = progress
        self.cache_dir = cache_dir
        self.on_error = on_error
        self.quantize = quantize
        self.memmap_dir = memmap_dir
        self.storage_options = storage_options
        self.timeout = timeout

    def fit(self, X=None, y=None):
        """Record the embedding width; the featurizer learns nothing.

        Parameters
        ----------
        X : ignored
        y : ignored

        Returns
        -------
        self : CLIPFeaturizer
        """
        self._validate_params()
        check_preprocess(self.preprocess)
        check_timeout(self.timeout)
        self.embedding_dim_ = embedding_dim(self.model)
        self._n_features_out = self.embedding_dim_
        return self

    def transform(self, X):
        """Embed images.

        Parameters
        ----------
        X : sequence of paths, PIL images or uint8 arrays
            Mixed freely; see Notes.

        Returns
        -------
        embeddings : ndarray of shape (n_samples, embedding_dim), float32
        """
        self._validate_params()
        check_timeout(self.timeout)
        forget_hosts()  # hosts down during an earlier call are tried again
        items = [
            RemoteFile(item, self.storage_options, self.timeout)
            if is_url(item)
            else item
            for item in check_image_inputs(X)
        ]
        embeddings, failures = embed_items(self, items)
        if failures:
            error = ImageLoadError(failures, len(items))
            if self.on_error == "raise":
                raise error
            for index, _, _ in failures:
                embeddings[index] = np.nan
            warn(f"{error} Their rows are NaN (on_error='nan').", UserWarning)
        return embeddings

    def _embed_items(self, items):
        """Embed validated ``items``; see :func:`embed_items`."""
        clip = load_clip(
            self.model, self.pretrained, self.device, preprocess=self.preprocess
        )
        if self.quantize and clip.device.type != "cpu":
            raise ValueError(
                f"quantize=True runs on the CPU only; this featurizer runs on "
                f"{clip.device}. Use device='cpu' or quantize=False."
            )
        dim = embedding_dim(self.model)
        embeddings = self._allocate(len(items), dim)
        if self.cache_dir is None:
            todo = np.arange(len(items))
            failures = self._embed(items, todo, embeddings, clip, None, None)
            return embeddings, sorted(failures)
        failures = []
        n_batches = -(-len(items) // self.batch_size)
        show = progress_shown(
            self.progress, long_run=n_batches >= AUTO_PROGRESS_MIN_BATCHES
        )
        with (
            EmbeddingCache(self.cache_dir, self._namespace(clip), dim) as cache,
            tqdm(
                total=len(items), desc="CLIP embeddings", unit="img", disable=not show
            ) as bar,
        ):
            # DataLoader worker processes start once per window: windows
            # grow with them, so that starting them stays a small cost.
            workers = self._workers(len(items), clip.device)
            batches = _CACHE_WINDOW_BATCHES * max(1, workers)
            for start, window in _read_once_windows(items, self.batch_size * batches):
                stop = start + len(window)
                found = self._embed_window(window, embeddings[start:stop], clip, cache)
                failures += [(start + i, item, why) for i, item, why in found]
                bar.update(len(window))
        return embeddings, sorted(failures)

    def _embed_window(self, items, embeddings, clip, cache):
        """Embed ``items`` (each read once: files as their bytes) into the
        rows ``embeddings``, serving and storing them through ``cache``.
        """
        keys = [content_key(item) for item in items]
        todo, repeats = self._fill_from_cache(cache, keys, embeddings)
        failures = self._embed(items, todo, embeddings, clip, cache, keys, False)
        return failures + self._copy_repeats(repeats, embeddings, failures, items)

    @staticmethod
    def _fill_from_cache(cache, keys, embeddings):
        """Copy cached rows into ``embeddings``; return the rows to embed and
        ``(row, first row with the same content)`` pairs for repeated inputs,
        which are embedded once.
        """
        damaged_before = cache.damaged_rows
        found = cache.get(keys)
        if cache.damaged_rows > damaged_before:
            warn(
                f"{cache.damaged_rows - damaged_before} damaged embedding(s) in "
                f"the cache {cache.path} failed their checksum; they are "
                "computed again and replaced.",
                UserWarning,
            )
        missing, repeats, first_of_key = [], [], {}
        for i, key in enumerate(keys):
            if key in found:
                embeddings[i] = found[key]
            elif key is None:
                missing.append(i)
            elif key in first_of_key:
                repeats.append((i, first_of_key[key]))
            else:
                first_of_key[key] = i
                missing.append(i)
        return np.asarray(missing, dtype=np.int64), repeats

    @staticmethod
    def _copy_repeats(repeats, embeddings, failures, items):
        """Fill repeated inputs from their first occurrence; return the
        failures of repeats whose first occurrence failed.
        """
        failed = {index: reason for index, _, reason in failures}
        repeated_failures = []
        for i, first in repeats:
            embeddings[i] = embeddings[first]
            if first in failed:
                repeated_failures.append((i, describe(items[i]), failed[first]))
        return repeated_failures

    def _allocate(self, n_items, dim):
        if self.memmap_dir is None:
            return np.empty((n_items, dim), np.float32)
        directory = Path(self.memmap_dir).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"clip-embeddings-{uuid.uuid4().hex}.npy"
        return np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float32, shape=(n_items, dim)
        )

    def _namespace(self, clip):
        return embedding_key(self, clip)

    def _workers(self, n_items, device):
        if self.num_workers != "auto":
            return self.num_workers
        if n_items <= self.batch_size or not worker_processes_allowed():
            # Starting a worker costs more than it saves; inside a joblib or
            # Dask worker no child process can start: threads decode.
            return 0
        # On CPU the model's threads use the cores: worker processes only
        # help with spare cores (measured: 2 cores, ViT-B-32, 0.93 of the
        # forward-only rate with threads between batches, 0.84 with a worker).
        busy = 1 if device.type == "cuda" else torch.get_num_threads()
        return max(0, min(4, (os.cpu_count() or 1) - busy))

    def _embed(self, items, todo, embeddings, clip, cache, keys, progress=None):
        """Embed ``items[todo]`` into ``embeddings`` and store each batch in
        ``cache``; return the unreadable items as ``(row, item, reason)``.
        """
        if not todo.size:
            return []
        subset = [items[i] for i in todo]
        cuda = clip.device.type == "cuda"
        subset_failures = []
        batches = iter_decoded(
            subset,
            clip.preprocess,
            batch_size=self.batch_size,
            num_workers=self._workers(len(subset), clip.device),
            pin_memory=cuda,
            progress=self.progress if progress is None else progress,
            desc="CLIP embeddings",
            failures=subset_failures,
        )
        chunk = self.batch_size
        encode = clip.model.encode_image
        if self.quantize:
            encode = quantized_image_encoder(self.model, self.pretrained)
        with torch.inference_mode(), autocast(clip.device, self.precision):
            for indices, batch in batches:
                if subset_failures and self.on_error == "raise" and cache is None:
                    continue  # the call will fail: only collect the bad items
                batch = batch.to(
                    clip.device,
                    non_blocking=True,
                    memory_format=torch.channels_last
                    if cuda
                    else torch.preserve_format,
                )
                features, chunk = _encode_in_chunks(encode, batch, chunk)
                if self.normalize:
                    features = torch.nn.functional.normalize(features, dim=-1)
                features = features.cpu().numpy()
                rows = todo[indices]
                embeddings[rows] = features
                if cache is not None:
                    cache.put([keys[i] for i in rows], features)
        return [(int(todo[i]), item, reason) for i, item, reason in subset_failures]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = False
        tags.non_deterministic = False
        return tags


#: With a cache, inputs are read in windows of this many batches (times the
#: DataLoader workers, if any; the next window while this one is embedded):
#: each file is read once, its bytes hashed for the cache key and decoded,
#: and memory holds two windows of encoded files, whatever the number of
#: inputs.
_CACHE_WINDOW_BATCHES = 8
#: Reads at once: remote stores answer slowly but in parallel.
_READ_THREADS = 16


def _read_once_windows(items, window):
    """Yield ``(start, items[start:start + window])`` with every file path
    and URL replaced by its bytes (:class:`ImageBytes`, or a
    :class:`FailedRead` carrying why it could not be read), read by threads,
    the next window while the caller embeds this one. Hashing and decoding
    the same bytes is what makes a cache entry exact: a file rewritten
    between two reads would otherwise file one content's embedding under
    the other's key.
    """

    def read(item):
        if isinstance(item, RemoteFile):
            return read_encoded(item.url, item.storage_options, item.timeout)
        if isinstance(item, (str, os.PathLike)):
            return read_encoded(item)
        return item

    with ThreadPoolExecutor(_READ_THREADS) as pool:
        pending = [pool.submit(read, item) for item in items[:window]]
        for start in range(0, len(items), window):
            ready = [future.result() for future in pending]
            following = items[start + window : start + 2 * window]
            pending = [pool.submit(read, item) for item in following]
            yield start, ready


def _encode_in_chunks(encode, batch, chunk):
    """``encode(batch)`` in pieces of ``chunk`` images, halving
    the pieces on CUDA out-of-memory errors. Returns the float32 features
    and the chunk size that worked, for the next batches.
    """
    outputs = []
    start = 0
    while start < len(batch):
        piece = batch[start : start + chunk]
        try:
            outputs.append(encode(piece).float())
        except torch.cuda.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            torch.cuda.empty_cache()
            warn(
                f"CUDA out of memory; embedding in batches of {chunk} images from "
                "now on.",
                RuntimeWarning,
            )
            continue
        start += len(piece)
    return torch.cat(outputs) if len(outputs) > 1 else outputs[0], chunk


# -- The featurizer's contract with the code that embeds for it elsewhere (the
# distributed workers, the embedding store, the benchmarks): what decides an
# embedding, its key, and the embedding of a list of items. ---------------------

#: Parameters of :class:`CLIPFeaturizer` that decide the embedding of an
#: image; the others (batch size, workers, caches, progress) decide only how
#: it is computed. Declared once: the cache key and a distributed job's
#: manifest are both made from these.
EMBEDDING_PARAMETERS = (
    "model",
    "pretrained",
    "preprocess",
    "precision",
    "normalize",
    "quantize",
)


def embedding_parameters(featurizer):
    """``{name: value}`` of the :data:`EMBEDDING_PARAMETERS` of
    ``featurizer``, with a local checkpoint path replaced by its identity
    (the SHA-256 of its bytes).
    """
    values = {name: getattr(featurizer, name) for name in EMBEDDING_PARAMETERS}
    if (
        model_schema(featurizer.model)[0] is not None
        and values["pretrained"] is not None
    ):
        # hf-hub: and local-dir: weights are identified by their file's bytes.
        values["pretrained"] = weights_file(featurizer.model, values["pretrained"])
    values["pretrained"] = checkpoint_identity(values["pretrained"])
    if values["preprocess"] is None:
        del values["preprocess"]  # keys of stores written before it existed
    else:
        choice = check_preprocess(values["preprocess"])
        # As JSON gives it back from a manifest: a tag, or a dict of lists.
        values["preprocess"] = (
            choice
            if isinstance(choice, str)
            else {k: list(v) if isinstance(v, tuple) else v for k, v in choice}
        )
    return values


def embedding_key(featurizer, clip):
    """The key that identifies ``featurizer``'s embeddings with the loaded
    model ``clip``: its embedding parameters (precision resolved on the
    model's device), the preprocessing and the embedding version. Equal keys
    mean equal embeddings of equal bytes; it keys the embedding cache and a
    distributed job's shards.
    """
    parts = embedding_parameters(featurizer)
    parts["precision"] = resolve_precision(clip.device, parts["precision"])
    # The transform itself, whichever parameter chose it, decides the key.
    parts.pop("preprocess", None)
    return namespace_key(
        version=_EMBEDDING_VERSION, preprocess=repr(clip.preprocess), **parts
    )


def embed_items(featurizer, items):
    """Embed validated ``items`` (paths, PIL images or arrays) with
    ``featurizer``, using its cache; return the embeddings and the
    unreadable items as sorted ``(row, description, reason)`` triples, whose
    rows are left unset. What ``transform`` and the distributed workers run.
    """
    return featurizer._embed_items(items)
