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
