"""
Deploying a fitted classifier with ONNX
=======================================

Fit in a notebook, serve without torch: a pipeline made by
:func:`~sklearn_clip.make_clip_pipeline` becomes one ONNX file, from
preprocessed pixels to class probabilities, that onnxruntime runs with
numpy and Pillow alone (a few hundred MB of packages instead of several GB).

This example runs on real photos of ants and bees with the package's tiny
random-weight CLIP (no pretrained weights can be downloaded where the
documentation is built); with real weights, pass ``"ViT-B-32"`` and a
pretrained tag and everything else stays the same.
"""

# %%
# Fit a pipeline
# --------------
import os
from pathlib import Path

import numpy as np

from sklearn_clip import (
    TINY_MODEL,
    GDAClassifier,
    load_image_folder,
    make_clip_pipeline,
)

SHARED_DATA = Path(
    os.environ.get("SKLEARN_CLIP_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
if not SHARED_DATA.is_dir():
    raise SystemExit("This example needs the photos in ../shared/data/images.")

root = SHARED_DATA / "images" / "hymenoptera"
train_paths, train_labels = load_image_folder(root / "train")
test_paths, _ = load_image_folder(root / "val")
pipe = make_clip_pipeline(
    GDAClassifier(), model=TINY_MODEL, pretrained=None, device="cpu", progress=False
)
pipe.fit(train_paths[::4], train_labels[::4])

# %%
# Export it
# ---------
# ``export_onnx`` (or ``sklearn-clip export model.joblib -o model.onnx`` on
# the command line) writes the image tower (exported with torch's dynamo
# exporter) and the head (a float64 graph written from its fitted arrays)
# as one graph. The labels and the preprocessing go in the file's metadata.
import tempfile

from sklearn_clip import export_onnx

folder = Path(tempfile.mkdtemp())
export_onnx(pipe, folder / "model.onnx")
print(f"model.onnx: {(folder / 'model.onnx').stat().st_size / 1e6:.1f} MB")

# %%
# Serve it without torch
# ----------------------
# :class:`~sklearn_clip.OnnxClassifier` imports only numpy, Pillow and
# onnxruntime: it decodes and preprocesses the images as the featurizer does
# (the same pixels, bit for bit), and runs a session with spin-waiting
# threads turned off. ``sklearn-clip predict model.onnx IMAGES...`` does the
# same from the command line and writes CSV or JSON lines.
from sklearn_clip import OnnxClassifier

served = OnnxClassifier(folder / "model.onnx")
proba = served.predict_proba(served.pixels(test_paths[:16]))
difference = np.abs(proba - pipe.predict_proba(test_paths[:16])).max()
print(f"classes {served.classes_.tolist()}; largest difference {difference:.1e}")
