"""
The seed study's few-shot table, on real CLIP features
======================================================

The study this package started from compared probes and adapters on frozen
CLIP ViT-B/32 features at 1 to 16 shots per class (FGVC-Aircraft). This
example runs the same comparison on real ViT-B/32 features of Stanford Cars
from the project's ``shared/data`` folder (196 classes; FGVC-Aircraft
features are not available there), with one few-shot draw per shot count to
keep the build fast. ``sklearn-clip bench`` runs every method over several
draws and reports mean +- std.

Nothing is tuned on the test split: every estimator uses its defaults.
"""

# %%
# Load the features
# -----------------
import os
from pathlib import Path

import numpy as np

# The project's real data (``shared/data`` beside the repository); the docs
# build sets SKLEARN_CLIP_DATA.
SHARED_DATA = Path(
    os.environ.get("SKLEARN_CLIP_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
if not SHARED_DATA.is_dir():
    raise SystemExit("This example needs the real features in ../shared/data.")


with np.load(SHARED_DATA / "features/clip-vit-b32/stanford_cars.npz") as data:
    X_pool, y_pool = data["X_train"].astype(np.float32), data["y_train"]
    X_test, y_test = data["X_test"].astype(np.float32), data["y_test"]
    text = data["text_features"].astype(np.float32)

# %%
# The methods of the study
# ------------------------
# (scikit-learn warns that one sample per class "could represent a regression"
# target; at 1 shot that is expected.)
import warnings

warnings.filterwarnings("ignore", message=".*could represent a regression")

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    LinearProbeClassifier,
    ZeroShotClassifier,
    ZeroShotLogits,
    sample_few_shot,
)

methods = {
    "zero-shot": lambda: ZeroShotClassifier(text_features=text),
    "StandardScaler + LR": lambda: make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=300)
    ),
    "image + zero-shot logits (LR)": lambda: make_pipeline(
        ZeroShotLogits(text_features=text, append=True),
        StandardScaler(),
        LogisticRegression(max_iter=300),
    ),
    "linear probe (BN)": lambda: LinearProbeClassifier(random_state=0),
    "attention probe": lambda: AttentionProbeClassifier(
        text_features=text, random_state=0
    ),
    "CLIP-Adapter": lambda: CLIPAdapterClassifier(text_features=text, random_state=0),
}
shots = [1, 2, 4, 8, 16]
accuracy = {name: [] for name in methods}
for n_shots in shots:
    X, y = sample_few_shot(X_pool, y_pool, n_shots=n_shots, random_state=0)
    for name, make in methods.items():
        accuracy[name].append(100 * make().fit(X, y).score(X_test, y_test))

# %%
# The table
# ---------
print(f"| method | {' | '.join(f'{n} shots' for n in shots)} |")
print(f"|---|{'---|' * len(shots)}")
for name, values in accuracy.items():
    print(f"| {name} | {' | '.join(f'{v:.1f}' for v in values)} |")

# %%
# The plot
# --------
# As in the study: the text-based heads win at 1-2 shots, where plain probes
# fall far below zero-shot; with more shots the probes catch up.
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 4))
for name, values in accuracy.items():
    ax.plot(shots, values, marker="o", label=name)
ax.set_xscale("log", base=2)
ax.set_xticks(shots, [str(n) for n in shots])
ax.set_xlabel("shots per class")
ax.set_ylabel("test accuracy (%)")
ax.set_title("Stanford Cars, CLIP ViT-B/32 features, one draw")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()
