"""
Trusting predictions: prediction sets, calibration and abstention
=================================================================

A few-shot classifier usually has a person behind it: confident images are
labelled automatically, the others go to review. This example measures, on
the 196 Stanford Cars classes (real CLIP ViT-B/32 features from
``shared/data``, four labelled images per class):

- **prediction sets** at 90 % with MAPIE's ``CrossConformalClassifier`` over
  the shots (there is no separate calibration split at four shots): their
  coverage on the test images and their mean size;
- **calibration** of :class:`~sklearn_clip.CLIPClassifier`'s probabilities:
  the expected calibration error and a reliability diagram;
- **abstention** ("predict or defer"): the accuracy on the images kept when
  the least confident are deferred, and the conformal rule "predict when the
  set holds a single class".

See :ref:`trusting` in the user guide for the reasoning behind each step.
"""

# %%
# Data: four labelled images per class, integer labels
# ----------------------------------------------------
# MAPIE's cross-conformal fits its fold models on labels re-encoded as
# ``0 .. n-1``; integer labels with the class text given as a dict
# ``label -> text feature`` keep every fold's text rows right, even when a
# fold lacks a class.
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

from mapie.classification import CrossConformalClassifier
from sklearn.model_selection import StratifiedKFold

from sklearn_clip import (
    CLIPClassifier,
    GDAClassifier,
    abstention_curve,
    expected_calibration_error,
    few_shot_indices,
    reliability_curve,
)

with np.load(SHARED_DATA / "features/clip-vit-b32/stanford_cars.npz") as data:
    X_pool, y_pool = data["X_train"].astype(np.float32), data["y_train"]
    X_test, y_test = data["X_test"].astype(np.float32), data["y_test"]
    text = dict(enumerate(data["text_features"].astype(np.float32)))

shots = few_shot_indices(y_pool, 4, random_state=0)
X, y = X_pool[shots], y_pool[shots]
warnings.filterwarnings("ignore", message=".*could represent a regression")

# %%
# 90 % prediction sets: cross-conformal over the shots
# ----------------------------------------------------
# Four stratified folds of the shots: each fold's images are scored by a
# model fitted on the other three, and those scores calibrate the sets of
# new images. The head is GDA blended with the zero-shot classifier, a fast
# text-based method.
folds = StratifiedKFold(4, shuffle=True, random_state=0)
conformal = CrossConformalClassifier(
    GDAClassifier(text_features=text, discriminant_weight="auto"),
    confidence_level=0.9,
    cv=folds,
    random_state=0,
).fit_conformalize(X, y)
_, sets = conformal.predict_set(X_test)
sets = sets[:, :, 0]  # one confidence level
# Columns follow the sorted labels 0 .. 195, so a label is its column.
covered = sets[np.arange(len(y_test)), y_test]
size = sets.sum(axis=1)
print(f"coverage of the 90 % sets: {covered.mean():.1%}")
print(f"mean set size: {size.mean():.2f} classes (of 196)")

# %%
# Calibration of CLIPClassifier
# -----------------------------
# Expected calibration error: the mean gap, over images, between the top
# label's probability and the accuracy of images predicted that confidently
# (15 equal-width bins). 0 is perfectly calibrated.
clf = CLIPClassifier(text_features=text, random_state=0).fit(X, y)
proba = clf.predict_proba(X_test)
ece = expected_calibration_error(y_test, proba, classes=clf.classes_)
print("CLIPClassifier uses", clf.chosen_)
print(f"test accuracy {clf.score(X_test, y_test):.1%}, calibration error {ece:.3f}")
confidence, accuracy, count = reliability_curve(y_test, proba, classes=clf.classes_)

# %%
# Predict or defer
# ----------------
# Keep the images whose top-label probability is highest, defer the rest.
# The threshold printed for a kept fraction is read off the test images
# here; in use, read it off held-out or out-of-fold predictions.
fractions = np.linspace(1.0, 0.1, 10)
kept_accuracy, threshold = abstention_curve(
    y_test, proba, classes=clf.classes_, fractions=fractions
)
for f, a, t in zip(fractions[::3], kept_accuracy[::3], threshold[::3]):
    print(f"keep {f:.0%}: accuracy {a:.1%} (probability >= {t:.2f})")

# The conformal rule: predict only when the 90 % set holds one class (the
# sets and their point predictions come from the cross-conformal GDA head
# above, not from CLIPClassifier).
single = size == 1
single_accuracy = np.mean(conformal.predict(X_test)[single] == y_test[single])
print(
    f"singleton sets: {single.mean():.0%} of the images kept, "
    f"accuracy {single_accuracy:.1%} on them"
)

# %%
# Reliability diagram and abstention curve
# ----------------------------------------
import matplotlib.pyplot as plt

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
filled = count > 0
left.plot([0, 1], [0, 1], ls="--", c="grey", label="calibrated")
left.plot(confidence[filled], accuracy[filled], "o-", label="CLIPClassifier")
left.set_xlabel("top-label probability (bin mean)")
left.set_ylabel("accuracy in the bin")
left.set_title(f"Reliability, ECE {ece:.3f}")
left.legend()
right.plot(100 * fractions, 100 * kept_accuracy, "o-", label="probability threshold")
right.plot(
    100 * single.mean(),
    100 * single_accuracy,
    "s",
    label="90 % set of one class (GDA head)",
)
right.set_xlabel("images kept (%)")
right.set_ylabel("accuracy on the kept images (%)")
right.set_title("Predict or defer")
right.invert_xaxis()
right.legend()
fig.tight_layout()
plt.show()
