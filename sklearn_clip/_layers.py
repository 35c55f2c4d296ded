"""The package's layers and the contracts between its rooms, listed once.

``tests/test_layout.py`` checks every import and every use of a private
name against this module, ``docs/import_graph.py`` colours the import graph
with it, and ``docs/development.rst`` shows it.

A *room* is a module, or the whole ``distributed`` subpackage. Each module
belongs to one layer:

- **shared**: machinery every room uses (labels, text, devices and threads,
  the skorch net builder, image loading, caches); imports shared modules
  only.
- **estimators**: one module per estimator or family; imports shared
  modules only, never another estimator module.
- **composite**: built on the estimators (the meta-estimators
  ``CLIPClassifier`` and ``TransCLIPClassifier``, as scikit-learn's
  ensembles build on trees; the benchmark; the estimator list and what
  is derived from it; the pipeline helper; the distributed subpackage);
  imports shared, estimator and composite modules.
- **entry points**: the package's face and the command line; may import
  anything.

A room uses another room's public names only, except through the contracts
in :data:`CONTRACTS`.
"""

LAYERS = {
    "shared": (
        "_base",
        "_busy",
        "_clip",
        "_compat",
        "_datasets",
        "_discriminant",
        "_docstrings",
        "_embedding_cache",
        "_heads",
        "_images",
        "_layers",
        "_machine_load",
        "_model_selection",
        "_onnx_runtime",
        "_remote",
        "_text",
        "_torch_utils",
        "_training",
        "_transformers",
        "_trust",
        "_unlabelled",
        "_validation",
        "_version",
        "_warnings",
    ),
    "estimators": (
        "_attention_probe",
        "_clip_adapter",
        "_featurizer",
        "_gda",
        "_linear_probe",
        "_tip_adapter",
        "_visual_prompt",
        "_zero_shot",
        "_zero_shot_logits",
        "_zs_linear_probe",
    ),
    "composite": (
        "_bench",
        "_bench_trust",
        "_clip_classifier",
        "_conformal",
        "_discovery",
        "_onnx",
        "_persistence",
        "_pipeline",
        "_transclip",
        "distributed",
    ),
    "entry points": ("__init__", "__main__", "_cli", "_onnx_cli"),
}

#: The layers each layer may import from.
MAY_IMPORT = {
    "shared": {"shared"},
    "estimators": {"shared"},
    "composite": {"shared", "estimators", "composite"},
    "entry points": {"shared", "estimators", "composite", "entry points"},
}

#: Private names one room may use from another, and why.
CONTRACTS = {
    # scikit-learn's private helpers, imported in one place (see _compat).
    "_compat": ("_fit_context", "_check_sample_weight", "_check_feature_names_in"),
    # scikit-learn's conventions for estimator bases: a subclass extends its
    # base's parameter constraints and fitted attributes.
    "_heads": ("_parameter_constraints", "_fitted_attributes"),
    "_base": ("_fitted_attributes",),
}


def layer_of(module):
    """The layer of a module of the package (``"distributed._store"``:
    the distributed subpackage's).
    """
    room = module.split(".")[0]
    for layer, modules in LAYERS.items():
        if room in modules:
            return layer
    raise KeyError(f"{module} is in no layer of sklearn_clip._layers.LAYERS")
