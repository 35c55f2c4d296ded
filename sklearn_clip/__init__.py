"""Adapt frozen, pretrained CLIP models to your labelled images, the scikit-learn way."""

from ._clip import (
    TINY_MODEL,
    CLIPWeightsUnavailableError,
    clear_clip_cache,
    load_clip,
    resolve_device,
)
from ._featurizer import CLIPFeaturizer
from ._gda import GDAClassifier
from ._images import ImageLoadError, load_image, load_image_folder
from ._linear_probe import LinearProbeClassifier
from ._model_selection import FewShotSplit, few_shot_indices, sample_few_shot
from ._text import TEMPLATES, encode_class_names
from ._text_heads import AttentionProbeClassifier, CLIPAdapterClassifier
from ._tip_adapter import TipAdapterClassifier
from ._visual_prompt import VisualPromptClassifier
from ._zero_shot import ZeroShotClassifier
from ._zero_shot_logits import ZeroShotLogits
from ._zs_linear_probe import ZSLinearProbeClassifier

__version__ = "0.1.0"

__all__ = [
    "TEMPLATES",
    "TINY_MODEL",
    "AttentionProbeClassifier",
    "CLIPAdapterClassifier",
    "CLIPFeaturizer",
    "CLIPWeightsUnavailableError",
    "FewShotSplit",
    "GDAClassifier",
    "ImageLoadError",
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
    "resolve_device",
    "sample_few_shot",
]
