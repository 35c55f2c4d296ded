"""
One classifier to reach for: CLIPClassifier
===========================================

:class:`~sklearn_clip.CLIPClassifier` cross-validates the package's methods on
the training samples alone, calibrates them, and keeps the best one or a
blend. This example fits it on 4 images per class of 60 Stanford Cars classes
(real CLIP ViT-B/32 features from ``shared/data``) and shows each candidate's
validation score, which made the choice, next to its test score, which
chose nothing.
"""

# %%
# A few-shot training set
# -----------------------
import os
import warnings
from pathlib import Path

import numpy as np

SHARED_DATA = Path(
    os.environ.get("SKLEARN_CLIP_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
if not SHARED_DATA.is_dir():
    raise SystemExit("This example needs the real features in ../shared/data.")

from sklearn_clip import CLIPClassifier, sample_few_shot

with np.load(SHARED_DATA / "features/clip-vit-b32/stanford_cars.npz") as data:
    X_pool, y_pool = data["X_train"].astype(np.float32), data["y_train"]
    X_test, y_test = data["X_test"].astype(np.float32), data["y_test"]
    text = data["text_features"].astype(np.float32)

# 60 classes keep the build fast; rows of ``text`` follow the sorted labels.
classes = np.unique(y_pool)[:60]
pool, test = np.isin(y_pool, classes), np.isin(y_test, classes)
X, y = sample_few_shot(X_pool[pool], y_pool[pool], n_shots=4, random_state=0)
X_test, y_test = X_test[test], y_test[test]
text = text[:60]

# %%
# Fit: cross-validation on the 240 training images only
# -----------------------------------------------------
warnings.filterwarnings("ignore", message=".*could represent a regression")
clf = CLIPClassifier(text_features=text, n_jobs=2, random_state=0).fit(X, y)
print(clf.selection_, "->", {name: round(w, 2) for name, w in clf.chosen_.items()})
print(f"test accuracy: {100 * clf.score(X_test, y_test):.2f} %")

# %%
# Validation scores against test scores
# -------------------------------------
# Every candidate refitted on all training images and scored on the test
# split, for comparison only: nothing above used these numbers.
results = clf.cv_results_
test_accuracy = [
    100 * clf.make_candidate(name, random_state=0).fit(X, y).score(X_test, y_test)
    for name in results["method"]
]
print("| method | status | validation accuracy | test accuracy | weight |")
print("|---|---|---|---|---|")
for row, name in enumerate(results["method"]):
    print(
        f"| {name} | {results['status'][row]} | "
        f"{100 * results['val_accuracy'][row]:.1f} | {test_accuracy[row]:.1f} | "
        f"{results['weight'][row]:.2f} |"
    )

# %%
# The plot
# --------
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.scatter(100 * results["val_accuracy"], test_accuracy, color="tab:blue")
for row, name in enumerate(results["method"]):
    ax.annotate(
        name,
        (100 * results["val_accuracy"][row], test_accuracy[row]),
        fontsize=7,
        xytext=(3, 3),
        textcoords="offset points",
    )
ax.axhline(
    100 * clf.score(X_test, y_test),
    color="tab:red",
    linestyle="--",
    label="CLIPClassifier",
)
ax.set_xlabel("cross-validated accuracy on the training images (%)")
ax.set_ylabel("test accuracy (%)")
ax.set_title("Stanford Cars, 60 classes, 4 shots")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()
