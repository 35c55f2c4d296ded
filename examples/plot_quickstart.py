"""
Quickstart: a folder of images
==============================

The usual workflow: list a folder of labelled photos, embed them once with a
frozen CLIP image encoder, and train a light classifier on the embeddings
with a handful of examples per class.

This example runs on real photos of ants and bees (``shared/data/images``
of the project). No pretrained CLIP weights can be downloaded where the
documentation is built, so it uses the package's tiny random-weight model;
with real weights replace ``MODEL`` and ``PRETRAINED`` by, for example,
``"ViT-B-32"`` and ``"laion2b_s34b_b79k"`` (or a local checkpoint path) and
the accuracies become meaningful.
"""

# %%
# List the images
# ---------------
# ``load_image_folder`` expects one sub-folder per class; the folder names
# are the labels (and the class names used in text prompts).
import os
from pathlib import Path

from sklearn_clip import load_image_folder

# The project's real data (``shared/data`` beside the repository); the docs
# build sets SKLEARN_CLIP_DATA.
SHARED_DATA = Path(
    os.environ.get("SKLEARN_CLIP_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
if not SHARED_DATA.is_dir():
    raise SystemExit("This example needs the photos in ../shared/data/images.")


root = SHARED_DATA / "images" / "hymenoptera"
train_paths, train_labels = load_image_folder(root / "train")
test_paths, test_labels = load_image_folder(root / "val")
print(
    f"{len(train_paths)} training and {len(test_paths)} test images, "
    f"classes {sorted(set(train_labels))}"
)

# %%
# Embed once
# ----------
# The featurizer is frozen: embedding is the only expensive step, so do it
# once and reuse the matrix for every classifier and every grid search.
from sklearn_clip import CLIPFeaturizer

MODEL, PRETRAINED = "sklearn-clip-tiny", None  # random weights: see above
featurizer = CLIPFeaturizer(MODEL, PRETRAINED, device="auto")
X_train = featurizer.fit_transform(train_paths)
X_test = featurizer.transform(test_paths)
print("embeddings:", X_train.shape, X_train.dtype)

# %%
# Few-shot training set and several classifiers
# ---------------------------------------------
# ``sample_few_shot`` draws k images per class, seeded.
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_clip import (
    CLIPAdapterClassifier,
    GDAClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
    sample_few_shot,
)

X_few, y_few = sample_few_shot(X_train, train_labels, n_shots=8, random_state=0)
text = dict(model=MODEL, pretrained=PRETRAINED)
classifiers = {
    "zero-shot": ZeroShotClassifier(**text),
    "Tip-Adapter": TipAdapterClassifier(**text),
    "CLIP-Adapter": CLIPAdapterClassifier(**text, random_state=0),
    "GDA": GDAClassifier(),
    "StandardScaler + LR": make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=1000)
    ),
}
for name, clf in classifiers.items():
    clf.fit(X_few, y_few)
    print(f"{name:>20}: test accuracy {clf.score(X_test, test_labels):.3f}")

# %%
# One pipeline from paths to labels
# ---------------------------------
# ``make_clip_pipeline`` puts the featurizer and the head on one CLIP model
# (images and class text must come from the same one). The pipeline pickles
# without CLIP's weights (the model is loaded by name when needed).
import pickle

from sklearn_clip import make_clip_pipeline

pipe = make_clip_pipeline(TipAdapterClassifier(), model=MODEL, pretrained=PRETRAINED)
pipe.fit(train_paths, train_labels)
print("predictions:", pipe.predict(test_paths[:4]))
print(f"pickled pipeline: {len(pickle.dumps(pipe)) / 1e3:.0f} kB")

# %%
# Probabilities per class
# -----------------------
import matplotlib.pyplot as plt

proba = pipe.predict_proba(test_paths[:8])
fig, ax = plt.subplots(figsize=(6, 3))
ax.imshow(proba.T, cmap="viridis", vmin=0, vmax=1)
ax.set_yticks(range(len(pipe.classes_)), pipe.classes_)
ax.set_xlabel("test image")
ax.set_title("predict_proba (random-weight model: near chance)")
fig.tight_layout()
plt.show()
