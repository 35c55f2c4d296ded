"""Image inputs: validating X, decoding to RGB, and listing image folders."""

import io
import multiprocessing
import os
import re
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import v2
from tqdm.auto import tqdm

from ._remote import DEFAULT_TIMEOUT, read_url
from ._warnings import warn

# Progress bars appear by default only when decoding takes several batches.
_AUTO_PROGRESS_MIN_BATCHES = 4
#: The same threshold, for the callers that draw their own bar.
AUTO_PROGRESS_MIN_BATCHES = _AUTO_PROGRESS_MIN_BATCHES

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
)


class ImageLoadError(ValueError):
    """Raised when some inputs cannot be turned into images.

    Parameters
    ----------
    failures : list of (int, str, str)
        ``(index, item description, reason)`` for every bad item.
    n_items : int
        Number of inputs in the call, for the message.

    Attributes
    ----------
    failures : list of (int, str, str)
        ``(index, item description, reason)`` for every bad item.
    """

    def __init__(self, failures, n_items):
        self.failures = list(failures)
        shown = self.failures[:20]
        lines = [f"  [{i}] {item}: {reason}" for i, item, reason in shown]
        if len(self.failures) > len(shown):
            lines.append(f"  ... and {len(self.failures) - len(shown)} more")
        super().__init__(
            f"{len(self.failures)} of {n_items} inputs could not be read as "
            "images (no rows were dropped; fix or remove them):\n" + "\n".join(lines)
        )


def check_image_inputs(X):
    """Validate the container of images and return it as a list.

    Accepted: a sequence (list, tuple, 1-d object array, pandas Series) of
    paths, PIL images or uint8 arrays, or one uint8 array of shape
    ``(n, H, W, 3)``.
    """
    if isinstance(X, (str, bytes, os.PathLike)):
        raise ValueError(
            f"X must be a sequence of images, got a single path {os.fspath(X)!r}. "
            "Pass a list of file paths; for a folder with one sub-folder per "
            "class use sklearn_clip.load_image_folder(folder)."
        )
    if isinstance(X, Image.Image):
        raise ValueError("X must be a sequence of images; wrap one image in a list.")
    if isinstance(X, np.ndarray):
        if X.ndim == 4 and X.dtype == np.uint8 and X.shape[-1] in (1, 3, 4):
            return _non_empty(list(X))
        if X.ndim == 1:
            return _non_empty(list(X))
        raise ValueError(
            "An array X must be a 1-d array of images/paths or a uint8 stack of "
            f"shape (n, height, width, channels); got dtype {X.dtype} and shape "
            f"{X.shape}."
        )
    if isinstance(X, Iterator) or not hasattr(X, "__len__"):
        raise ValueError(
            f"X must be a sequence with a length (list, tuple, array), got "
            f"{type(X).__name__}; materialise generators with list(X)."
        )
    if hasattr(X, "iloc"):  # pandas Series: index by position, not by label
        X = X.to_numpy()
    if not isinstance(X, (Sequence, np.ndarray)):
        raise ValueError(f"X must be a sequence of images, got {type(X).__name__}.")
    return _non_empty(list(X))


def _non_empty(items):
    # One rule for every container, arrays included.
    if not items:
        raise ValueError("X is empty: at least one image is required.")
    return items


def describe(item):
    """A short, readable name for an input item in error messages."""
    if isinstance(item, ImageBytes):
        return repr(item.name)
    if isinstance(item, RemoteFile):
        return repr(item.url)
    if isinstance(item, FailedRead):
        return repr(item.name)
    if isinstance(item, (str, os.PathLike)):
        return repr(os.fspath(item))
    if isinstance(item, Image.Image):
        return f"PIL image {item.mode} {item.size[0]}x{item.size[1]}"
    if isinstance(item, np.ndarray):
        return f"array {item.dtype} {item.shape}"
    return f"object of type {type(item).__name__}"


def _flatten_alpha(image):
    # Transparent pixels often hold arbitrary colours; show them as white.
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


def _to_rgb(image):
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # Integer greyscale is 16-bit (PNG, TIFF): one fixed scale for every
        # image, so a dark 16-bit image stays dark. Float images carry no
        # range; values above 1 are read as 0-255, otherwise as 0-1.
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            top = 255.0 if values.max(initial=0) > 1.0 else 1.0
        else:
            top = 65535.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    ):
        return _flatten_alpha(image)
    return image.convert("RGB")


def _array_to_image(array):
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise ValueError("float array contains NaN or infinite values")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(
                f"float arrays must hold values in [0, 1], got [{array.min():g}, "
                f"{array.max():g}]; pass uint8 (0-255) arrays for other ranges"
            )
        array = (array * 255.0 + 0.5).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(
            f"arrays must be uint8 (0-255) or float in [0, 1], got dtype {array.dtype}"
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"arrays must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
            f"got {array.shape}"
        )
    if 0 in array.shape:
        raise ValueError(f"image has zero size {array.shape}")
    if array.ndim == 2:
        return Image.fromarray(array, mode="L")
    return Image.fromarray(array, mode="RGB" if array.shape[-1] == 3 else "RGBA")


def _check_pixel_limit(size):
    limit = Image.MAX_IMAGE_PIXELS
    if limit and size[0] * size[1] > limit:
        raise Image.DecompressionBombError(
            f"Image size ({size[0] * size[1]} pixels) exceeds limit of {limit} "
            "pixels (PIL.Image.MAX_IMAGE_PIXELS)"
        )


@dataclass(frozen=True)
class ImageBytes:
    """The bytes of an encoded image file (JPEG, PNG, WebP, ...), as read
    from an object store, a tar archive or a dataset column.

    Decoded exactly as the same file on disk would be (and cached under the
    same content key), so embeddings of the bytes equal those of the file.

    Parameters
    ----------
    data : bytes
        The encoded file.
    name : str, default="image bytes"
        Where the bytes come from, for error messages (a URL, a tar member).

    Examples
    --------
    >>> from sklearn_clip import ImageBytes
    >>> item = ImageBytes(open(path, "rb").read(), name=path)  # doctest: +SKIP
    """

    data: bytes
    name: str = "image bytes"

    def __repr__(self):
        return f"ImageBytes({self.name!r}, {len(self.data)} bytes)"


_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(item):
    """Whether ``item`` is a URL string (``s3://``, ``gs://``, ``https://``,
    ``file://``, ...), read through fsspec.
    """
    return isinstance(item, str) and bool(_URL.match(item))


@dataclass(frozen=True)
class RemoteFile:
    """An image file at a URL, read through fsspec when it is decoded (in
    the decoding threads, so that reads overlap the model).
    """

    url: str
    storage_options: dict | None = None
    #: Connect and read timeout: seconds, or a ``(connect, read)`` pair.
    timeout: float | tuple = DEFAULT_TIMEOUT

    def read(self):
        # Timeouts on every read; transient failures are tried again.
        return read_url(self.url, self.storage_options, self.timeout)


@dataclass(frozen=True)
class FailedRead:
    """An input whose bytes could not be read; decoding it raises ``error``
    (so that it is reported like any unreadable input, in its place).
    """

    name: str
    error: BaseException


def read_encoded(item, storage_options=None, timeout=DEFAULT_TIMEOUT):
    """Read a file path or URL once: its bytes as :class:`ImageBytes` (named
    by the path or URL), or a :class:`FailedRead` carrying the error that
    decoding the path would raise (URLs: with ``timeout``, after retries).
    """
    name = os.fspath(item)
    try:
        if is_url(name):
            data = RemoteFile(name, storage_options, timeout).read()
        else:
            path = Path(name)
            if not path.exists():
                raise FileNotFoundError("file does not exist")
            if path.is_dir():
                raise IsADirectoryError("is a directory, not an image file")
            try:
                data = path.read_bytes()
            except PermissionError:
                raise PermissionError(
                    "permission denied: this process may not read the file"
                ) from None
        if not data:
            raise ValueError("file is empty")
    except Exception as exc:  # noqa: BLE001 - reported in the input's place
        return FailedRead(name, exc)
    return ImageBytes(data, name=name)


def _decode_encoded(source):
    """Decode a file or file-like object holding an encoded image."""
    try:
        opened = Image.open(source)
        with opened:
            # Pillow only warns between 1x and 2x its pixel limit; an image
            # that large is refused, not decoded. Checked here, not with
            # warning filters, which are process-wide and not thread-safe
            # (decoding runs in threads).
            _check_pixel_limit(opened.size)
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if image is opened:
                image = opened.copy()
    except UnidentifiedImageError:
        raise ValueError("not an image file Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image too large (decompression bomb): {exc}") from None
    except PermissionError:
        raise
    except OSError as exc:
        raise ValueError(f"corrupt or truncated image: {exc}") from None
    return image


def load_image(item):
    """Decode one input (path, PIL image or uint8 array) to an RGB PIL image.

    EXIF orientation is applied. Raises ``ValueError`` or ``OSError`` with a
    readable reason; callers collect these per item.

    Parameters
    ----------
    item : str, path, PIL image or ndarray
        A file path, a PIL image, or a uint8 (or float in [0, 1]) array of
        shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).

    Returns
    -------
    PIL.Image.Image
        The image in RGB mode (transparent pixels on white).
    """
    if isinstance(item, FailedRead):
        raise item.error
    if isinstance(item, RemoteFile):
        item = ImageBytes(item.read(), name=item.url)
    if isinstance(item, ImageBytes):
        if not item.data:
            raise ValueError("file is empty")
        image = _decode_encoded(io.BytesIO(item.data))
    elif isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError("file does not exist")
        if path.is_dir():
            raise IsADirectoryError("is a directory, not an image file")
        if path.stat().st_size == 0:
            raise ValueError("file is empty")
        try:
            image = _decode_encoded(path)
        except PermissionError:
            raise PermissionError(
                "permission denied: this process may not read the file"
            ) from None
    elif isinstance(item, Image.Image):
        try:
            item.load()
        except (AssertionError, ValueError, OSError) as exc:
            raise ValueError(
                "PIL image cannot be read: its file was closed or is damaged "
                f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''}); call "
                "image.load() (or image.copy()) before the file is closed"
            ) from None
        image = ImageOps.exif_transpose(item)
    elif isinstance(item, np.ndarray):
        image = _array_to_image(item)
    else:
        raise TypeError(
            "unsupported input type; expected a file path, ImageBytes, PIL image "
            "or uint8 array"
        )
    if image.width == 0 or image.height == 0:
        raise ValueError(f"image has zero size {image.size}")
    return _to_rgb(image)


#: Top-level folder names that mean a dataset split, not a class.
SPLIT_FOLDER_NAMES = frozenset({"train", "val", "valid", "validation", "test"})


def load_image_folder(folder, *, split=None, extensions=IMAGE_EXTENSIONS):
    """List the images of a folder laid out as one sub-folder per class.

    Parameters
    ----------
    folder : str or path
        ``folder/<class name>/<image file>``; files directly inside
        ``folder`` are ignored, sub-folders are searched recursively.
    split : str, default=None
        For a dataset laid out as ``folder/<split>/<class name>/<image>``
        (split folders named train, val, valid, validation or test): the
        split to list, e.g. ``"train"``. A folder whose sub-folders are all
        split names is refused without it, instead of returning the splits
        as classes.
    extensions : set of str
        Lower-case file suffixes treated as images.

    Returns
    -------
    paths : list of str
        Image file paths, sorted.
    labels : list of str
        The class (sub-folder name) of each path.

    Examples
    --------
    >>> from sklearn_clip import load_image_folder
    >>> paths, labels = load_image_folder("photos/")  # doctest: +SKIP
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{os.fspath(folder)!r} is not a directory")
    subfolders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if split is not None:
        if not (root / split).is_dir():
            raise ValueError(
                f"{os.fspath(folder)!r} has no split folder {split!r}; its "
                f"sub-folders are {subfolders}."
            )
        root = root / split
    elif subfolders and all(name.lower() in SPLIT_FOLDER_NAMES for name in subfolders):
        raise ValueError(
            f"{os.fspath(folder)!r} holds the split folders {subfolders}, not one "
            "folder per class. List one split at a time, e.g. "
            f"load_image_folder({os.fspath(folder)!r}, "
            f"split={'train' if 'train' in subfolders else subfolders[0]!r})."
        )
    paths, labels = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in extensions:
                paths.append(os.fspath(path))
                labels.append(class_dir.name)
    if not paths:
        raise ValueError(
            f"No images found in {os.fspath(folder)!r}: expected one sub-folder "
            f"per class holding files with suffixes {sorted(extensions)}."
        )
    return paths, labels


def list_image_files(folder, *, extensions=IMAGE_EXTENSIONS):
    """Every image file under ``folder`` (recursively), sorted, as strings."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{os.fspath(folder)!r} is not a directory")
    return [
        os.fspath(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix.lower() in extensions
    ]


class DecodedImages(torch.utils.data.Dataset):
    """Decodes and transforms one item; failures become messages, not raises,
    so that every bad item can be reported at once (see :func:`collate_decoded`).
    """

    def __init__(self, items, transform):
        self.items = items
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        try:
            return index, self.transform(load_image(item)), None
        except Exception as exc:  # noqa: BLE001 - reported per item by the caller
            return index, None, (describe(item), f"{type(exc).__name__}: {exc}")


def collate_decoded(samples):
    """Batch :class:`DecodedImages` samples into ``(indices, tensor, failures)``."""
    indices = [i for i, tensor, _ in samples if tensor is not None]
    tensors = [tensor for _, tensor, _ in samples if tensor is not None]
    failures = [(i, *error) for i, _, error in samples if error is not None]
    batch = torch.stack(tensors) if tensors else None
    return indices, batch, failures


def split_preprocess(preprocess):
    """Split open_clip's evaluation transform into its geometric part and its
    normalisation.

    Returns ``(to_uint8, mean, std)``: ``to_uint8`` maps a PIL image to a
    ``(3, H, W)`` uint8 tensor at the model's input size (resize and crop
    only), and ``(x / 255 - mean) / std`` then equals what ``preprocess``
    returns. Keeping images as uint8 lets them be decoded once and cached at a
    quarter of the float size.
    """
    geometric, mean, std = [], None, None
    for step in preprocess.transforms:
        name = type(step).__name__
        if name == "Normalize":
            mean, std = step.mean, step.std
        elif name in ("ToTensor", "MaybeToTensor"):
            continue
        else:
            geometric.append(step)
    if mean is None:
        raise ValueError(f"The CLIP preprocessing has no Normalize step: {preprocess}")
    to_uint8 = v2.Compose([*geometric, v2.PILToTensor()])
    mean = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    return to_uint8, mean, std


def _thread_batches(dataset, batch_size, pin_memory):
    """Batches decoded by a thread pool while the caller waits (Pillow
    releases the GIL while it decodes and resizes).
    """
    threads = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(dataset), batch_size):
            stop = min(len(dataset), start + batch_size)
            indices, batch, failures = collate_decoded(
                list(pool.map(dataset.__getitem__, range(start, stop)))
            )
            if pin_memory and batch is not None:
                batch = batch.pin_memory()
            yield indices, batch, failures


def worker_processes_allowed():
    """Whether this process may start DataLoader worker processes.

    Not inside another pool's worker (joblib/loky, multiprocessing, Dask):
    daemonic processes cannot have children, and loky's process objects
    lack what DataLoader workers expect. Decoding uses threads there.
    """
    return (
        multiprocessing.parent_process() is None
        and not multiprocessing.current_process().daemon
    )


def checked_num_workers(num_workers):
    """``num_workers`` where worker processes are allowed, else 0 with a
    warning (decoding falls back to threads).
    """
    if num_workers and not worker_processes_allowed():
        warn(
            f"num_workers={num_workers} ignored: this code runs inside a worker "
            f"process ({multiprocessing.current_process().name}), which cannot "
            "start DataLoader worker processes; decoding with threads instead.",
            UserWarning,
        )
        return 0
    return num_workers


def progress_shown(progress, *, long_run=True):
    """Whether a progress bar shows: ``"auto"`` only for long runs and only on
    a terminal (no carriage-return lines in log files).
    """
    if progress == "auto":
        return long_run and sys.stderr.isatty()
    return bool(progress)


def iter_decoded(
    items,
    transform,
    *,
    batch_size,
    num_workers=0,
    pin_memory=False,
    progress="auto",
    desc="images",
    failures=None,
):
    """Decode and transform ``items`` in batches.

    With ``num_workers > 0``, DataLoader worker processes decode while the
    caller computes; with 0, a pool of threads decodes each batch in parallel
    while the caller waits (on a CPU whose cores all run the model, worker
    processes would only slow the model down).

    Yields ``(indices, batch)``. With ``failures=None``, it stops yielding at
    the first bad item, keeps decoding only to collect the other bad items,
    then raises one :class:`ImageLoadError` naming all of them. With a list
    given as ``failures``, bad items are appended to it as ``(index, item,
    reason)`` and the good items of every batch are yielded. Rows are never
    dropped silently.
    """
    dataset = DecodedImages(items, transform)
    if checked_num_workers(num_workers):
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_decoded,
            pin_memory=pin_memory,
            # Two batches in flight per worker keep the model fed without
            # holding more than O(batch) decoded images.
            prefetch_factor=2,
        )
    else:
        loader = _thread_batches(dataset, batch_size, pin_memory)
    n_batches = -(-len(items) // batch_size)
    show = progress_shown(progress, long_run=n_batches >= _AUTO_PROGRESS_MIN_BATCHES)
    collect = failures is not None
    found = failures if collect else []
    for indices, batch, batch_failures in tqdm(
        loader, desc=desc, unit="batch", total=n_batches, disable=not show
    ):
        found.extend(batch_failures)
        if batch is not None and (collect or not found):
            yield indices, batch
    if found and not collect:
        raise ImageLoadError(found, len(items))
