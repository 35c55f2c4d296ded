"""Serving an exported classifier with onnxruntime: no torch, no open_clip.

Imports only numpy, Pillow and onnxruntime (and those lazily), so that a
serving environment needs neither torch nor open_clip: decoding, the CLIP
preprocessing (resize, crop, normalise, as the model's settings say) and
onnxruntime sessions tuned for shared machines.
"""

import json
import os

import numpy as np

#: Metadata keys of an exported model (written by :mod:`._onnx`).
META_CLASSES = "sklearn_clip.classes"
META_INPUT = "sklearn_clip.input"
META_PREPROCESS = "sklearn_clip.preprocess"
META_VERSION = "sklearn_clip.version"

#: Environment variable overriding the intra-op thread count of sessions.
THREADS_VARIABLE = "SKLEARN_CLIP_ONNX_THREADS"

#: Pillow's resampling filters by torchvision's interpolation names.
_PIL_FILTERS = {
    "nearest": 0,
    "lanczos": 1,
    "bilinear": 2,
    "bicubic": 3,
    "box": 4,
    "hamming": 5,
}


def session_thread_count():
    """Intra-op threads of an onnxruntime session: the cores this process
    may run on, or ``SKLEARN_CLIP_ONNX_THREADS`` (a positive int).
    """
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if value:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(
                f"{THREADS_VARIABLE}={value!r}: give a positive number of threads."
            )
        return count
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def inference_session(model, *, threads=None, providers=None):
    """An onnxruntime ``InferenceSession`` tuned for shared machines.

    Intra-op threads do not spin-wait between operators
    (``session.intra_op.allow_spinning = 0``): spinning threads take cores
    that other processes need, and when they are descheduled the thread
    doing the work waits for them (the lesson of the package's torch thread
    policy). One inter-op thread; ``threads`` intra-op threads
    (default :func:`session_thread_count`).

    Parameters
    ----------
    model : str, path or bytes
        The ``.onnx`` file or its bytes.
    threads : int, default=None
        Intra-op threads; None uses :func:`session_thread_count`.
    providers : list of str, default=None
        Execution providers; None uses the CPU.

    Returns
    -------
    onnxruntime.InferenceSession
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or session_thread_count()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    return ort.InferenceSession(
        model, sess_options=options, providers=providers or ["CPUExecutionProvider"]
    )


# -- decoding and preprocessing (mirrors sklearn_clip._images.load_image and
# open_clip's evaluation transform, without torch) ---------------------------------


def decode_image(path):
    """Decode an image file to an RGB PIL image, as the featurizer does:
    EXIF orientation applied, transparent pixels on white, 16-bit and float
    greyscale scaled to 0-255.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if image is opened:
                image = opened.copy()
    except UnidentifiedImageError:
        raise ValueError("not an image file Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image too large (decompression bomb): {exc}") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except OSError as exc:
        raise ValueError(f"corrupt or truncated image: {exc}") from None
    return _to_rgb(image)


def _to_rgb(image):
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
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
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _resized_size(width, height, size, max_size):
    """The output size of torchvision's ``Resize(size)`` on a PIL image."""
    if len(size) == 2:
        return size[1], size[0]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size[0], int(size[0] * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _center_crop_or_pad(image, size, fill):
    """Center crop of a PIL image as torchvision's ``CenterCrop`` (and
    open_clip's ``CenterCropOrPad``) make it: pad with ``fill`` where the
    image is smaller, then crop.
    """
    from PIL import Image

    height, width = size
    pad_w, pad_h = max(0, width - image.size[0]), max(0, height - image.size[1])
    if pad_w or pad_h:
        color = tuple(fill) if isinstance(fill, (list, tuple)) else (fill,) * 3
        padded = Image.new(
            image.mode, (image.size[0] + pad_w, image.size[1] + pad_h), color
        )
        padded.paste(image, (pad_w // 2, pad_h // 2))
        image = padded
    top = int(round((image.size[1] - height) / 2.0))
    left = int(round((image.size[0] - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


def preprocess_image(image, settings):
    """One RGB PIL image to the model's float32 ``(3, H, W)`` input.

    ``settings`` is the dict :func:`sklearn_clip._onnx.preprocess_settings`
    stores in an exported model: ``steps`` (``resize``,
    ``resize_keep_ratio``, ``center_crop``) with their parameters, then
    ``mean`` and ``std``. The pixels equal
    torchvision's on PIL images (same Pillow resampling, same float32
    arithmetic).
    """
    for step in settings["steps"]:
        if step["op"] == "resize":
            size = _resized_size(*image.size, step["size"], step.get("max_size"))
            if size != image.size:
                image = image.resize(size, _PIL_FILTERS[step["interpolation"]])
        elif step["op"] == "resize_keep_ratio":
            # open_clip's ResizeKeepRatio: the shortest (longest=0) or
            # longest (1) side's ratio to the target, or a mix
            width, height = image.size
            target_h, target_w = step["size"]
            ratio_h, ratio_w = height / target_h, width / target_w
            longest = step["longest"]
            ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (
                1.0 - longest
            )
            size = (round(width / ratio), round(height / ratio))
            if size != image.size:
                image = image.resize(size, _PIL_FILTERS[step["interpolation"]])
        elif step["op"] == "center_crop":
            image = _center_crop_or_pad(image, step["size"], step.get("fill", 0))
        else:
            raise ValueError(f"unknown preprocessing step {step['op']!r}")
    pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    pixels = pixels.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(settings["mean"], dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(settings["std"], dtype=np.float32).reshape(3, 1, 1)
    return (pixels - mean) / std


class OnnxClassifier:
    """A classifier exported by ``sklearn-clip export``, served by onnxruntime.

    Needs neither torch nor open_clip. The class labels, the kind of input
    (``"pixels"`` for a pipeline with its CLIP featurizer, ``"embeddings"``
    for a head alone) and the image preprocessing come from the file's
    metadata.

    Parameters
    ----------
    path : str or path
        The ``.onnx`` file.
    threads : int, default=None
        Intra-op threads (see :func:`inference_session`).

    Attributes
    ----------
    classes_ : ndarray
        The labels, in the columns' order.
    input_kind : {"pixels", "embeddings"}
    preprocess : dict or None
        The image preprocessing (None for embeddings).

    Examples
    --------
    >>> clf = OnnxClassifier("model.onnx")  # doctest: +SKIP
    >>> labels, proba = clf.predict_images(["cat.jpg"])  # doctest: +SKIP
    """

    def __init__(self, path, *, threads=None):
        self.session = inference_session(path, threads=threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_CLASSES not in meta:
            raise ValueError(
                f"{path} was not written by sklearn-clip export: it has no "
                f"{META_CLASSES!r} metadata."
            )
        self.classes_ = np.asarray(json.loads(meta[META_CLASSES]))
        self.input_kind = meta.get(META_INPUT, "embeddings")
        self.preprocess = json.loads(meta.get(META_PREPROCESS, "null"))
        self._input = self.session.get_inputs()[0]
        outputs = [o.name for o in self.session.get_outputs()]
        self._proba_output = (
            "probabilities" if "probabilities" in outputs else outputs[-1]
        )

    def predict_proba(self, X):
        """Probabilities for a batch of inputs (pixels or embeddings).

        Parameters
        ----------
        X : ndarray
            ``(n, 3, H, W)`` preprocessed pixels or ``(n, n_features)``
            embeddings, as the file's input says.

        Returns
        -------
        ndarray of shape (n, n_classes)
        """
        dtype = np.float64 if self._input.type == "tensor(double)" else np.float32
        X = np.ascontiguousarray(X, dtype=dtype)
        return self.session.run([self._proba_output], {self._input.name: X})[0]

    def predict(self, X):
        """Labels of a batch of inputs.

        Parameters
        ----------
        X : ndarray
            Pixels or embeddings, as in :meth:`predict_proba`.

        Returns
        -------
        ndarray of shape (n,)
            Elements of ``classes_``.
        """
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def pixels(self, paths):
        """Decode and preprocess image files to the model's input.

        Parameters
        ----------
        paths : list of str or path
            Image files.

        Returns
        -------
        ndarray of shape (n, 3, H, W), float32
        """
        if self.input_kind != "pixels":
            raise ValueError(
                "This model takes CLIP embeddings, not images: export a pipeline "
                "with its CLIPFeaturizer (make_clip_pipeline) to predict on images."
            )
        return np.stack(
            [preprocess_image(decode_image(p), self.preprocess) for p in paths]
        )

    def iter_predict_images(self, paths, batch_size=32):
        """Predict image files batch by batch; unreadable ones give reasons.

        Parameters
        ----------
        paths : list of str or path
            Image files.
        batch_size : int, default=32
            Images per onnxruntime run.

        Yields
        ------
        path : str or path
            The file, in the order given.
        proba : ndarray of shape (n_classes,) or None
            Its probabilities; None when it could not be read.
        error : str or None
            Why it could not be read.
        """
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            good, pixels, errors = [], [], {}
            for i, path in enumerate(chunk):
                try:
                    pixels.append(preprocess_image(decode_image(path), self.preprocess))
                    good.append(i)
                except (OSError, ValueError) as exc:
                    errors[i] = f"{type(exc).__name__}: {exc}"
            proba = self.predict_proba(np.stack(pixels)) if pixels else []
            found = dict(zip(good, proba))
            for i, path in enumerate(chunk):
                yield path, found.get(i), errors.get(i)
