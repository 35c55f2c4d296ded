"""
Learning from unlabelled images too: TransCLIPClassifier
========================================================

A few labelled images per class, and many nobody labelled:
:class:`~sklearn_clip.TransCLIPClassifier` learns from both. Rows of ``y``
marked ``-1`` are unlabelled, as in scikit-learn's semi-supervised
estimators. This example uses the 196 Stanford Cars classes (real CLIP
ViT-B/32 features from ``shared/data``) in the two honest protocols:

- **transductive**: the images to classify are passed, unlabelled, to
  ``fit``, and ``transduction_`` labels them;
- **inductive**: a separate pool of unlabelled images is passed to ``fit``;
  new images are classified with ``predict``.
"""

# %%
# Data: two labelled images per class, the rest of the pool unlabelled
# --------------------------------------------------------------------
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

from sklearn_clip import (
    UNLABELLED,
    TipAdapterClassifier,
    TransCLIPClassifier,
    ZeroShotClassifier,
    few_shot_indices,
)

with np.load(SHARED_DATA / "features/clip-vit-b32/stanford_cars.npz") as data:
    X_pool, y_pool = data["X_train"].astype(np.float32), data["y_train"]
    X_test, y_test = data["X_test"].astype(np.float32), data["y_test"]
    text = data["text_features"].astype(np.float32)

labelled = few_shot_indices(y_pool, 2, random_state=0)
X, y = X_pool[labelled], y_pool[labelled]
X_rest = np.delete(X_pool, labelled, axis=0)  # nobody labelled these


def hidden(n):
    return np.full(n, UNLABELLED)


warnings.filterwarnings("ignore", message=".*could represent a regression")
scores = {}

# %%
# The few-shot method alone
# -------------------------
method = TipAdapterClassifier(text_features=text, fine_tune=True, random_state=0)
scores["Tip-Adapter-F alone"] = method.fit(X, y).score(X_test, y_test)

# %%
# Transductive: the test images, unlabelled, join the fit
# -------------------------------------------------------
# Honest when these images are the whole collection to label and nothing is
# chosen on their true labels (here they only score the result).
clf = TransCLIPClassifier(method, random_state=0)
clf.fit(np.vstack([X, X_test]), np.r_[y, hidden(len(X_test))])
print("unlabelled images used:", clf.uses_unlabelled_, clf.cv_results_)
scores["+ test images (transductive)"] = np.mean(clf.transduction_[len(y) :] == y_test)

# %%
# Inductive: a separate unlabelled pool, then new images
# ------------------------------------------------------
clf = TransCLIPClassifier(method, random_state=0)
clf.fit(np.vstack([X, X_rest]), np.r_[y, hidden(len(X_rest))])
print("weight of the mixture for new images:", clf.new_image_weight_)
scores["+ unlabelled pool (inductive)"] = clf.score(X_test, y_test)

# %%
# No label at all: zero-shot and the test images
# ----------------------------------------------
# With ``classes`` given, every row may be unlabelled; the zero-shot
# classifier is the prior.
zero_shot = ZeroShotClassifier(text_features=text)
scores["zero-shot"] = zero_shot.fit(text, np.arange(196)).score(X_test, y_test)
clf = TransCLIPClassifier(zero_shot, classes=np.arange(196))
clf.fit(X_test, hidden(len(X_test)))
scores["zero-shot + test images"] = np.mean(clf.transduction_ == y_test)

# %%
# Test accuracy
# -------------
import matplotlib.pyplot as plt

for name, score in scores.items():
    print(f"{name:32s} {100 * score:.2f} %")
fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(scores)[::-1], [100 * s for s in scores.values()][::-1])
ax.set_xlabel("test accuracy (%), Stanford Cars")
ax.set_xlim(min(100 * s for s in scores.values()) - 5, None)
fig.tight_layout()
plt.show()
