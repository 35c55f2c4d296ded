"""CLIPFeaturizer: images in, CLIP image embeddings out."""

from numbers import Integral

import numpy as np
import open_clip
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from tqdm.auto import tqdm

from ._clip import autocast, load_clip
from ._images import ImageLoadError, check_image_inputs, describe, load_image
from ._validation import DEVICE_CONSTRAINT, PRECISION_CONSTRAINT, PRETRAINED_CONSTRAINT

# Progress bars appear by default only when featurizing takes several batches.
_AUTO_PROGRESS_MIN_BATCHES = 4


class _DecodedImages(torch.utils.data.Dataset):
    """Decodes and preprocesses one item; failures become messages, not raises,
    so that every bad item can be reported at once."""

    def __init__(self, items, preprocess):
        self.items = items
        self.preprocess = preprocess

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        try:
            return index, self.preprocess(load_image(item)), None
        except Exception as exc:  # noqa: BLE001 - reported per item below
            return index, None, (describe(item), f"{type(exc).__name__}: {exc}")


def _collate(samples):
    indices = [i for i, tensor, _ in samples if tensor is not None]
    tensors = [tensor for _, tensor, _ in samples if tensor is not None]
    failures = [(i, *error) for i, _, error in samples if error is not None]
    batch = torch.stack(tensors) if tensors else None
    return indices, batch, failures


class CLIPFeaturizer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Embed images with a frozen CLIP image encoder.

    The CLIP model is given by name and loaded once per process through a
    shared cache (:func:`load_clip`); the featurizer itself holds no weights,
    so it clones and pickles cheaply. It learns nothing: ``fit`` only records
    the output width.

    Parameters
    ----------
    model : str, default="ViT-B-32"
        open_clip architecture name. ``"sklearn-clip-tiny"`` is a small
        random-weight model for tests and docs.
    pretrained : str, path or None, default="laion2b_s34b_b79k"
        open_clip pretrained tag, path to a local checkpoint file, or ``None``
        for random weights.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:1"``, ... Resolved each time the model is used.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Inference precision. ``"auto"`` is bfloat16 autocast on CUDA and
        float32 on CPU.
    batch_size : int, default=64
        Images per forward pass.
    num_workers : int, default=0
        DataLoader worker processes decoding images in parallel with the
        model; 0 decodes in the main process.
    normalize : bool, default=True
        L2-normalise each embedding (what CLIP's cosine similarity uses).
    progress : bool or "auto", default="auto"
        Show a tqdm progress bar; ``"auto"`` shows it for runs of several
        batches.

    Attributes
    ----------
    embedding_dim_ : int
        Width of the embeddings.

    See Also
    --------
    ZeroShotClassifier : Classify the embeddings with class-name prompts.

    Notes
    -----
    X may mix file paths (``str`` or :class:`pathlib.Path`), PIL images and
    uint8 arrays of shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or
    ``(H, W, 4)``. Images are converted to RGB (greyscale, palette, 16-bit,
    CMYK; transparency is composited on white) and EXIF orientation is
    applied. Inputs that cannot be read raise one :class:`ImageLoadError`
    (a ``ValueError``) listing every bad item: rows are never dropped, since
    a transformer inside a Pipeline must keep X and y aligned.

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

    _parameter_constraints = {
        "model": [str],
        "pretrained": PRETRAINED_CONSTRAINT,
        "device": DEVICE_CONSTRAINT,
        "precision": PRECISION_CONSTRAINT,
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "normalize": ["boolean"],
        "progress": ["boolean", StrOptions({"auto"})],
    }

    def __init__(
        self,
        model="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        *,
        device="auto",
        precision="auto",
        batch_size=64,
        num_workers=0,
        normalize=True,
        progress="auto",
    ):
        self.model = model
        self.pretrained = pretrained
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.normalize = normalize
        self.progress = progress

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
        config = open_clip.get_model_config(self.model)
        if config is None:
            raise ValueError(
                f"Unknown CLIP model {self.model!r} (see open_clip.list_models())."
            )
        self.embedding_dim_ = int(config["embed_dim"])
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
        items = check_image_inputs(X)
        clip = load_clip(self.model, self.pretrained, self.device)
        loader = torch.utils.data.DataLoader(
            _DecodedImages(items, clip.preprocess),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=clip.device.type == "cuda",
        )
        show = self.progress
        if show == "auto":
            show = len(loader) >= _AUTO_PROGRESS_MIN_BATCHES
        embeddings = None
        failures = []
        with torch.inference_mode(), autocast(clip.device, self.precision):
            for indices, batch, batch_failures in tqdm(
                loader, desc="CLIP embeddings", unit="batch", disable=not show
            ):
                failures.extend(batch_failures)
                if failures or batch is None:
                    continue  # keep decoding to report every bad item
                batch = batch.to(clip.device, non_blocking=True)
                features = clip.model.encode_image(batch).float()
                if self.normalize:
                    features = torch.nn.functional.normalize(features, dim=-1)
                if embeddings is None:
                    embeddings = np.empty((len(items), features.shape[1]), np.float32)
                embeddings[indices] = features.cpu().numpy()
        if failures:
            raise ImageLoadError(failures, len(items))
        return embeddings

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = False
        tags.non_deterministic = False
        return tags
