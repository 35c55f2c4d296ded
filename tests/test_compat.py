"""The package works where its libraries need help: python -OO (no docstrings)."""

import subprocess
import sys

_WITHOUT_DOCSTRINGS = """
import numpy as np
import sklearn_clip
assert sklearn_clip.LinearProbeClassifier.__doc__ is None  # really -OO
for name in sklearn_clip.__all__:
    getattr(sklearn_clip, name)
import sklearn_clip.distributed
X = np.random.default_rng(0).normal(size=(40, 8))
y = np.arange(40) % 2
text = np.eye(2, 8)
for clf in (
    sklearn_clip.LinearProbeClassifier(device="cpu"),
    sklearn_clip.CLIPAdapterClassifier(text_features=text, device="cpu"),
    sklearn_clip.CLIPClassifier(text_features=text, device="cpu", random_state=0),
):
    assert clf.fit(X + 2 * y[:, None], y).score(X + 2 * y[:, None], y) > 0.9
print("works")
"""


def test_the_package_imports_and_fits_under_python_OO():
    result = subprocess.run(
        [sys.executable, "-OO", "-W", "ignore", "-c", _WITHOUT_DOCSTRINGS],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "works"


def test_the_installed_scikit_learn_is_in_the_declared_range():
    # pyproject.toml bounds scikit-learn to the releases whose private names
    # sklearn_clip._compat imports; this installation must be one of them.
    import re
    from pathlib import Path

    import sklearn
    from packaging.specifiers import SpecifierSet

    import sklearn_clip._compat as compat

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'"scikit-learn([^"]+)"', pyproject).group(1)
    assert "<" in declared  # an upper bound: untested releases are not pulled in
    assert SpecifierSet(declared).contains(sklearn.__version__)
    for name in compat.__all__:
        assert getattr(compat, name) is not None
