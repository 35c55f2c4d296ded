"""The package's layout: estimator modules import only shared modules."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sklearn_clip"

#: One module per estimator (or family of one estimator).
ESTIMATOR_MODULES = {
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
}
#: Built on the estimators (they import estimator modules; nothing below
#: them may import these).
COMPOSITE_MODULES = {
    "_bench",
    "_clip_classifier",
    # the estimator list (all_estimators) and what is derived from it
    "_discovery",
    "_persistence",
    # sklearn_clip.distributed and what it re-exports (built on CLIPFeaturizer)
    "_embed_to_parquet",
    "_embedding_store",
    "_parquet_shards",
    "_ray_data",
    "distributed",
}


def package_imports(module):
    """Names of the package modules that ``module`` imports."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_estimator_modules_import_only_shared_modules():
    for module in sorted(ESTIMATOR_MODULES):
        crossing = package_imports(module) & (ESTIMATOR_MODULES | COMPOSITE_MODULES)
        assert not crossing, f"{module} imports the estimator modules {crossing}"


def test_every_module_is_classified():
    shared = {
        "__init__",
        "__main__",
        "_base",
        "_cli",
        "_clip",
        "_compat",
        "_docstrings",
        "_embedding_cache",
        "_heads",
        "_images",
        "_model_selection",
        "_pipeline",
        "_text",
        "_torch_utils",
        "_training",
        "_validation",
        "_version",
        "_warnings",
    }
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    known = shared | ESTIMATOR_MODULES | COMPOSITE_MODULES
    assert modules == known, modules ^ known
