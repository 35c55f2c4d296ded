"""Adapt frozen, pretrained CLIP models to your labelled images, the scikit-learn way."""

from ._version import __version__
from ._clip import (
    TINY_MODEL,
    CLIPWeightsUnavailableError,
    clear_clip_cache,
    load_clip,
    resolve_device,
)
from ._base import CLIPModelMismatchWarning, InconsistentVersionWarning
from ._featurizer import CLIPFeaturizer
from ._gda import GDAClassifier
from ._images import ImageLoadError, load_image, load_image_folder
from ._linear_probe import LinearProbeClassifier
from ._model_selection import FewShotSplit, few_shot_indices, sample_few_shot
from ._persistence import SKOPS_TRUSTED_TYPES
from ._pipeline import make_clip_pipeline
from ._text import TEMPLATES, encode_class_names
from ._text_heads import AttentionProbeClassifier, CLIPAdapterClassifier
from ._tip_adapter import TipAdapterClassifier
from ._visual_prompt import VisualPromptClassifier
from ._zero_shot import ZeroShotClassifier
from ._zero_shot_logits import ZeroShotLogits
from ._zs_linear_probe import ZSLinearProbeClassifier


__all__ = [
    "SKOPS_TRUSTED_TYPES",
    "TEMPLATES",
    "TINY_MODEL",
    "AttentionProbeClassifier",
    "CLIPAdapterClassifier",
    "CLIPFeaturizer",
    "CLIPModelMismatchWarning",
    "CLIPWeightsUnavailableError",
    "FewShotSplit",
    "GDAClassifier",
    "ImageLoadError",
    "InconsistentVersionWarning",
    "LinearProbeClassifier",
    "TipAdapterClassifier",
    "VisualPromptClassifier",
    "ZeroShotClassifier",
    "ZSLinearProbeClassifier",
    "ZeroShotLogits",
    "clear_clip_cache",
    "encode_class_names",
    "few_shot_indices",
    "load_clip",
    "load_image",
    "load_image_folder",
    "make_clip_pipeline",
    "resolve_device",
    "sample_few_shot",
]
