"""Class text embeddings: class names x prompt templates -> one vector per class."""

import numpy as np
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from ._clip import load_clip
from ._torch_utils import autocast

#: Prompt template sets shipped with the package; estimators accept these
#: names or any list of format strings containing ``{}``.
TEMPLATES = {
    "simple": ("a photo of a {}.",),
    # CLIP's 80-prompt ImageNet ensemble, as format strings (picklable).
    "imagenet": tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES),
}


def resolve_templates(templates):
    """Return a tuple of format strings from a template-set name or a list."""
    if isinstance(templates, str):
        if templates in TEMPLATES:
            return TEMPLATES[templates]
        if "{}" in templates:
            return (templates,)
        raise ValueError(
            f"templates={templates!r} is neither a known template set "
            f"{sorted(TEMPLATES)} nor a format string containing '{{}}'."
        )
    templates = tuple(templates)
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(
            "templates must be a non-empty list of strings each containing '{}' "
            f"exactly once; offending: {bad or templates!r}"
        )
    return templates


def encode_class_names(
    class_names,
    templates="simple",
    *,
    model="ViT-B-32",
    pretrained="laion2b_s34b_b79k",
    device="auto",
    precision="auto",
    progress=False,
):
    """Embed class names with CLIP's text encoder, averaged over templates.

    For each class, every template is filled with the class name, the prompts
    are embedded and L2-normalised, averaged, and the mean is re-normalised.

    Parameters
    ----------
    class_names : sequence of str
        One name per class, e.g. ``["Boeing 737", "Airbus A320"]``.
    templates : str or sequence of str, default="simple"
        ``"simple"`` (``"a photo of a {}."``), ``"imagenet"`` (CLIP's
        80-prompt ensemble), or format strings such as
        ``["a photo of a {}, a type of aircraft."]``.
    model, pretrained, device
        The CLIP model, as in :func:`load_clip`.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Inference precision (see :class:`CLIPFeaturizer`).
    progress : bool, default=False
        Show a progress bar over classes.

    Returns
    -------
    text_features : ndarray of shape (n_classes, embedding_dim), float32
        Unit-norm rows in ``class_names`` order.

    Examples
    --------
    >>> from sklearn_clip import encode_class_names
    >>> text = encode_class_names(["cat", "dog"], model="sklearn-clip-tiny",
    ...                           pretrained=None, device="cpu")
    >>> text.shape
    (2, 64)
    """
    class_names = [str(name) for name in class_names]
    if not class_names:
        raise ValueError("class_names is empty.")
    templates = resolve_templates(templates)
    clip = load_clip(model, pretrained, device)
    with torch.inference_mode(), autocast(clip.device, precision):
        weights = build_zero_shot_classifier(
            clip.model,
            clip.tokenizer,
            class_names,
            templates,
            num_classes_per_batch=max(1, 256 // len(templates)),
            device=clip.device,
            use_tqdm=progress,
        )
    text = weights.T.float()
    # Renormalise in float32: the library's normalisation ran in autocast dtype.
    text = torch.nn.functional.normalize(text, dim=-1).cpu().numpy()
    return np.ascontiguousarray(text, dtype=np.float32)


def logit_scale_of(model="ViT-B-32", pretrained="laion2b_s34b_b79k", device="auto"):
    """CLIP's learned temperature ``exp(logit_scale)`` for a model."""
    clip = load_clip(model, pretrained, device)
    return float(clip.model.logit_scale.exp().item())


def logit_bias_of(model="ViT-B-32", pretrained="laion2b_s34b_b79k", device="auto"):
    """The learned logit bias of a sigmoid-trained model (SigLIP), else 0."""
    bias = getattr(load_clip(model, pretrained, device).model, "logit_bias", None)
    return 0.0 if bias is None else float(bias.reshape(-1)[0].item())


def is_sigmoid_model(model):
    """Whether ``model``'s configuration says it was trained with SigLIP's
    sigmoid loss (it has a logit bias). False when the configuration cannot
    be read without loading anything or going online.
    """
    from ._clip import model_config

    try:
        config = model_config(model, local_only=True) or {}
    except Exception:  # noqa: BLE001 - an unknown or unreachable model
        return False
    return config.get("init_logit_bias") is not None
