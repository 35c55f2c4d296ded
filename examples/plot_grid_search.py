"""
Leak-free hyperparameter search for few-shot heads
==================================================

Few-shot papers often pick epochs or hyperparameters on the test split, which
inflates their numbers. Here :class:`~sklearn_clip.FewShotSplit` makes
:class:`~sklearn.model_selection.GridSearchCV` select the attention probe's
``ratio`` and BatchNorm options using only the labelled pool: each split
trains on ``n_shots`` images per class (as the final model will) and
validates on the rest of the pool. The test split is touched exactly once, to
score the chosen model.

The features are real CLIP ViT-B/32 embeddings of Stanford Cars from the
project's ``shared/data`` folder (no CLIP weights can be downloaded where the
documentation is built); with your own images, compute them with
:class:`~sklearn_clip.CLIPFeaturizer`.
"""

# %%
# Load precomputed features
# -------------------------
# ``X_train`` is the labelled pool (16 images per class), ``X_test`` the
# evaluation split; ``text_features`` are the class-name embeddings.
import os
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV

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
# The few-shot training set
# -------------------------
# Draw 8 images per class from the pool: the user's labelled data. Nothing
# below looks at ``X_test`` until the final score.
from sklearn_clip import AttentionProbeClassifier, FewShotSplit, sample_few_shot

X_train, y_train = sample_few_shot(X_pool, y_pool, n_shots=8, random_state=0)

# %%
# Search the grid with few-shot splits of the training set
# --------------------------------------------------------
# Each split trains on 4 of the 8 images per class and validates on the other
# 4, so candidates are compared with few shots, close to how they will be
# used, instead of with the usual 80 % of the data.
head = AttentionProbeClassifier(text_features=text, random_state=0)
grid = {
    "ratio": [0.0, 0.2, 0.4, 0.6],
    "pre_bn": [True, False],
    "post_bn": [True, False],
}
search = GridSearchCV(head, grid, cv=FewShotSplit(4, n_splits=3, random_state=0))
search.fit(X_train, y_train)
print("best parameters:", search.best_params_)
print(f"best cross-validated accuracy: {search.best_score_:.3f}")

# %%
# Score the chosen model once on the test split
# ---------------------------------------------
# ``refit=True`` (the default) refits the best candidate on all 8 shots.
default = AttentionProbeClassifier(text_features=text, random_state=0).fit(
    X_train, y_train
)
print(f"test accuracy, selected hyperparameters: {search.score(X_test, y_test):.3f}")
print(f"test accuracy, package defaults:         {default.score(X_test, y_test):.3f}")

# %%
# The validation scores of the grid
# ---------------------------------
import matplotlib.pyplot as plt

results = search.cv_results_
fig, ax = plt.subplots(figsize=(6, 3.5))
for pre_bn in (True, False):
    for post_bn in (True, False):
        rows = [
            i
            for i, params in enumerate(results["params"])
            if params["pre_bn"] == pre_bn and params["post_bn"] == post_bn
        ]
        ax.errorbar(
            [results["params"][i]["ratio"] for i in rows],
            [results["mean_test_score"][i] for i in rows],
            yerr=[results["std_test_score"][i] for i in rows],
            marker="o",
            capsize=3,
            label=f"pre BN {pre_bn}, post BN {post_bn}",
        )
ax.set_xlabel("attention ratio")
ax.set_ylabel("validation accuracy (few-shot splits)")
ax.set_title("Attention probe, Stanford Cars, 8-shot pool")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
