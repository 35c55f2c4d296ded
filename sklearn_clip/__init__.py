"""Adapt frozen, pretrained CLIP models to your labelled images, the scikit-learn way.

Public names are imported on first use (PEP 562), so that ``import
sklearn_clip`` and the command line's ``--help`` do not load torch.
"""

import importlib
import sys

from ._version import __version__ as __version__

if sys.flags.optimize >= 2:  # python -OO: skorch needs help (see _compat)
    importlib.import_module("._compat", __name__).make_importable_without_docstrings()

# public name -> private module that defines it
_EXPORTS = {
    "TINY_MODEL": "_clip",
    "CLIPWeightsUnavailableError": "_clip",
    "clear_clip_cache": "_clip",
    "load_clip": "_clip",
    "resolve_device": "_torch_utils",
    "CLIPModelMismatchWarning": "_base",
    "InconsistentVersionWarning": "_base",
    "CLIPClassifier": "_clip_classifier",
    "CLIPFeaturizer": "_featurizer",
    "all_estimators": "_discovery",
    "GDAClassifier": "_gda",
    "ImageBytes": "_images",
    "ImageLoadError": "_images",
    "load_image": "_images",
    "load_image_folder": "_images",
    "LinearProbeClassifier": "_linear_probe",
    "FewShotSplit": "_model_selection",
    "few_shot_indices": "_model_selection",
    "sample_few_shot": "_model_selection",
    "SKOPS_TRUSTED_TYPES": "_persistence",
    "make_clip_pipeline": "_pipeline",
    "export_onnx": "_onnx",
    "register_onnx_converters": "_onnx",
    "OnnxClassifier": "_onnx_runtime",
    "TEMPLATES": "_text",
    "encode_class_names": "_text",
    "convert_transformers_clip": "_transformers",
    "AttentionProbeClassifier": "_attention_probe",
    "CLIPAdapterClassifier": "_clip_adapter",
    "TipAdapterClassifier": "_tip_adapter",
    "TransCLIPClassifier": "_transclip",
    "transductive_scorer": "_transclip",
    "UNLABELLED": "_unlabelled",
    "VisualPromptClassifier": "_visual_prompt",
    "ZeroShotClassifier": "_zero_shot",
    "ZeroShotLogits": "_zero_shot_logits",
    "ZSLinearProbeClassifier": "_zs_linear_probe",
    "abstention_curve": "_trust",
    "expected_calibration_error": "_trust",
    "reliability_curve": "_trust",
    "check_class_conditional": "_conformal",
    "transductive_conformal_sets": "_conformal",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sklearn_clip' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


# Code that already uses open_clip (joblib workers running a pipeline, user
# scripts) expects the package's model configs to be registered on import;
# open_clip, and so torch, is loaded then anyway.
if "open_clip" in sys.modules:
    importlib.import_module("._clip", __name__)
