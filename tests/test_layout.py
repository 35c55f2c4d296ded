"""The package's layout, checked against its one description
(``sklearn_clip._layers``): every module in a layer, imports only from the
layers it may use, and no private name of one room used by another outside
the declared contracts."""

import ast
import functools
from pathlib import Path

from sklearn_clip._layers import CONTRACTS, LAYERS, MAY_IMPORT, layer_of

PACKAGE = Path(__file__).resolve().parents[1] / "sklearn_clip"


@functools.cache
def modules():
    """``{module name: syntax tree}``; ``distributed._store`` and the like
    for the subpackage."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(
            parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts
        )
        found[name] = ast.parse(path.read_text())
    return found


def room(module):
    return module.split(".")[0]


def _resolve(base, dotted, name, known):
    """``(module, name)`` for ``name`` imported from ``base + dotted`` (lists
    of parts below the package): a submodule imported by name
    (``from sklearn_clip import _bench``) is the module itself, any other
    name comes from the module it is imported from (``__init__`` for the
    package and ``distributed`` for the subpackage)."""
    parts = base + [p for p in dotted.split(".") if p]
    if ".".join(parts + [name]) in known:
        return ".".join(parts + [name]), name
    return ".".join(parts) or "__init__", name


def package_imports(module, tree):
    """``(imported module, imported name)`` of every import of the package's
    own modules: relative ones (``from ._text import x``), absolute ones
    (``from sklearn_clip._bench import x``, ``import sklearn_clip._x as y``,
    ``from sklearn_clip import _bench``) and ``importlib.import_module`` with
    a constant name (``"sklearn_clip._x"``, or ``"._x"`` with the package)."""
    known = set(modules())
    package = ["distributed"] if room(module) == "distributed" else []
    found = []

    def absolute(dotted):
        """The parts below the package of an absolute name, or None."""
        head, _, rest = dotted.partition(".")
        return (
            rest.split(".")
            if head == "sklearn_clip" and rest
            else ([] if dotted == "sklearn_clip" else None)
        )

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            for alias in node.names:
                found.append(_resolve(base, node.module or "", alias.name, known))
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = absolute(node.module)
            if parts is not None:
                for alias in node.names:
                    found.append(_resolve(parts, "", alias.name, known))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = absolute(alias.name)
                if parts is not None:
                    target = ".".join(parts) or "__init__"
                    found.append((target, parts[-1] if parts else "sklearn_clip"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            name = node.args[0].value
            if name.startswith("."):
                level = len(name) - len(name.lstrip("."))
                base = package[: len(package) - level + 1]
                parts = base + name.lstrip(".").split(".")
            else:
                parts = absolute(name)
            if parts is not None:
                found.append((".".join(parts) or "__init__", parts[-1]))
    return found


def test_every_module_is_in_one_layer():
    rooms = {room(module) for module in modules()}
    listed = [m for layer in LAYERS.values() for m in layer]
    assert sorted(listed) == sorted(set(listed)), "a module is in two layers"
    assert rooms == set(listed), rooms ^ set(listed)


def test_imports_follow_the_layers():
    crossing = []
    for module, tree in modules().items():
        layer = layer_of(module)
        for target, _ in package_imports(module, tree):
            if room(target) == room(module):
                continue
            if layer_of(target) not in MAY_IMPORT[layer]:
                crossing.append(f"{module} ({layer}) imports {target}")
    assert not crossing, crossing


def test_no_estimator_module_imports_another():
    estimators = set(LAYERS["estimators"])
    for module, tree in modules().items():
        if room(module) in estimators:
            imported = {room(t) for t, _ in package_imports(module, tree)}
            assert not (imported & estimators) - {room(module)}, module


def _private_names(tree):
    """Private names a module defines: top-level ones, methods and attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_rooms_use_each_others_private_names_only_through_the_contracts():
    trees = modules()
    defined = {}
    for module, tree in trees.items():
        defined.setdefault(room(module), set()).update(_private_names(tree))
    allowed = {name for names in CONTRACTS.values() for name in names}
    all_modules = {m for layer in LAYERS.values() for m in layer}
    violations = []
    for module, tree in trees.items():
        own = defined[room(module)]
        others = set().union(*(v for r, v in defined.items() if r != room(module)))
        for target, name in package_imports(module, tree):
            private = name.startswith("_") and not name.startswith("__")
            if private and room(target) != room(module) and name not in allowed:
                if name not in all_modules:  # "from . import _bench": a module
                    violations.append(f"{module} imports {name} from {target}")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or node.attr.startswith("__"):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if (
                node.attr.startswith("_")
                and node.attr in others
                and node.attr not in own
                and node.attr not in allowed
            ):
                violations.append(f"{module}:{node.lineno} uses .{node.attr}")
    assert not violations, violations


def test_the_contracts_name_what_their_rooms_define():
    trees = modules()
    for module, names in CONTRACTS.items():
        assert set(names) <= _private_names(trees[module]) | set(
            getattr(__import__(f"sklearn_clip.{module}", fromlist=["_"]), "__all__", ())
        ), module


def test_package_imports_resolves_every_spelling_of_an_import():
    """Absolute imports, aliases and ``import_module`` resolve like relative
    ones: an estimator module cannot reach another room's private names by
    spelling the import differently."""
    source = "\n".join(
        [
            "from ._text import encode",
            "from sklearn_clip._bench import _busy",
            "from sklearn_clip import _tip_adapter, ZeroShotClassifier",
            "import sklearn_clip._gda as gda",
            "import sklearn_clip.distributed._store",
            "import sklearn_clip",
            "from sklearn_clip.distributed import EmbeddingStore",
            "import importlib",
            "importlib.import_module('sklearn_clip._cli')",
            "importlib.import_module('._heads', __package__)",
            "import numpy, sklearn.base",
            "from sklearn import clone",
        ]
    )
    assert package_imports("_gda", ast.parse(source)) == [
        ("_text", "encode"),
        ("_bench", "_busy"),
        ("_tip_adapter", "_tip_adapter"),
        ("__init__", "ZeroShotClassifier"),
        ("_gda", "_gda"),
        ("distributed._store", "_store"),
        ("__init__", "sklearn_clip"),
        ("distributed", "EmbeddingStore"),
        ("_cli", "_cli"),
        ("_heads", "_heads"),
    ]
    nested = package_imports(
        "distributed._embed",
        ast.parse("from .._clip import load_clip\nfrom . import _store"),
    )
    assert nested == [("_clip", "load_clip"), ("distributed._store", "_store")]


def test_examples_use_public_names_only():
    # The gallery is what users copy: no private module, no private name.
    private = []
    for path in sorted((PACKAGE.parent / "examples").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "sklearn_clip" and any(p.startswith("_") for p in parts):
                    private.append(f"{path.name}:{node.lineno} imports {name}")
    assert not private, private
