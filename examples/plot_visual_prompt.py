"""
Training a visual prompt
========================

:class:`~sklearn_clip.VisualPromptClassifier` learns one frame of pixels,
added to every image before CLIP's frozen image encoder, so that CLIP's
zero-shot logits fit a new task (Bahng et al. 2022). Only the frame is
trained; CLIP itself never changes.

No pretrained CLIP weights can be downloaded where this documentation is
built, so this example uses the package's tiny random-weight model
(``"sklearn-clip-tiny"``, 64 x 64 inputs) on real photos of ants and bees
from the project's ``shared/data`` folder. Accuracies are therefore
meaningless; the point is the workflow. With real weights, use
``VisualPromptClassifier("ViT-B-32", "laion2b_s34b_b79k")`` (prompt width 30
on 224 x 224 inputs) on a GPU.
"""

# %%
# Real photos, listed from a CSV
# ------------------------------
import csv
import os
from pathlib import Path

# The project's real data (``shared/data`` beside the repository); the docs
# build sets SKLEARN_CLIP_DATA.
SHARED_DATA = Path(
    os.environ.get("SKLEARN_CLIP_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
if not SHARED_DATA.is_dir():
    raise SystemExit("This example needs the photos in ../shared/data/images.")


root = SHARED_DATA / "images" / "hymenoptera"
with open(root / "labels.csv", newline="") as handle:
    rows = list(csv.DictReader(handle))
train = [r for r in rows if r["split"] == "train"]
paths = [str(root / r["path"]) for r in train]
labels = [r["classname"] for r in train]  # "ant" / "bee": used as prompts
print(len(paths), "training photos")

# %%
# Train the padding prompt
# ------------------------
# The images are decoded and resized once, then kept as uint8 tensors for
# every epoch. The paper trains 1,000 epochs with SGD at lr 40; a few epochs
# show the mechanics here.
from sklearn_clip import VisualPromptClassifier

clf = VisualPromptClassifier(
    "sklearn-clip-tiny",
    pretrained=None,
    prompt="padding",
    prompt_size=8,
    max_epochs=20,
    batch_size=64,
    device="cpu",
    random_state=0,
    verbose=0,
)
clf.fit(paths, labels)
losses = clf.net_.history[:, "train_loss"]
print(f"training loss: {losses[0]:.4f} -> {losses[-1]:.4f}")

# %%
# With and without the prompt
# ---------------------------
# ``use_prompt=False`` gives plain zero-shot CLIP, for comparison.
val = [r for r in rows if r["split"] == "val"]
val_paths = [str(root / r["path"]) for r in val]
val_labels = [r["classname"] for r in val]
print(f"validation accuracy with prompt:    {clf.score(val_paths, val_labels):.3f}")
zero_shot = (clf.predict(val_paths, use_prompt=False) == val_labels).mean()
print(f"validation accuracy without prompt: {zero_shot:.3f}")

# %%
# Look at the learned prompt
# --------------------------
# ``prompt_`` is a (3, H, W) array in normalised pixel units, zero inside
# the frame; ``save_prompt_image`` writes it de-normalised as a PNG.
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

png = Path(tempfile.mkdtemp()) / "visual_prompt.png"
clf.save_prompt_image(png)
fig, axes = plt.subplots(1, 2, figsize=(7, 3.5))
axes[0].imshow(Image.open(png))
axes[0].set_title("learned prompt (de-normalised)")
axes[1].imshow(np.abs(clf.prompt_).sum(axis=0), cmap="magma")
axes[1].set_title("|prompt| summed over channels")
for ax in axes:
    ax.axis("off")
fig.tight_layout()
plt.show()
