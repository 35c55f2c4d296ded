"""Write fitted estimators with an sklearn-clip checkout, for
``tests/test_persistence.py::test_estimators_stored_by_0_1_0_load_and_predict``.

    python tests/data/make_stored_estimators.py PATH_TO_CHECKOUT OUT_DIR

Run once with the release whose pickles must keep loading (the files in
``stored-0.1.0/`` were written by sklearn-clip 0.1.0, commit 11e70a5); the
data are synthetic and small (no shared data, no downloaded weights).
"""

import pickle
import sys
import warnings
from pathlib import Path

checkout, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
# The checkout's package, not an installed (editable) one.
sys.meta_path[:] = [f for f in sys.meta_path if "Editable" not in type(f).__name__]
sys.path.insert(0, str(checkout))

import numpy as np  # noqa: E402

import sklearn_clip  # noqa: E402

assert Path(sklearn_clip.__file__).resolve().is_relative_to(checkout)
warnings.simplefilter("ignore")
from sklearn_clip import (  # noqa: E402
    TINY_MODEL,
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    CLIPClassifier,
    CLIPFeaturizer,
    GDAClassifier,
    LinearProbeClassifier,
    TipAdapterClassifier,
    VisualPromptClassifier,
    ZeroShotClassifier,
    ZeroShotLogits,
    ZSLinearProbeClassifier,
    make_clip_pipeline,
)

rng = np.random.default_rng(0)
text = np.linalg.qr(rng.normal(size=(16, 3)))[0].T  # 3 orthonormal class rows
y = np.repeat(["ant", "bee", "wasp"], 8)
X = text[np.searchsorted(["ant", "bee", "wasp"], y)] + 0.3 * rng.normal(size=(24, 16))
X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
tiny = dict(model=TINY_MODEL, pretrained=None, device="cpu")
images = [rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8) for _ in range(6)]
image_labels = ["ant", "bee"] * 3
T = dict(text_features=text, device="cpu")
cases = {
    "zero_shot": (ZeroShotClassifier(**T), X, y, "predict_proba"),
    "zero_shot_logits": (ZeroShotLogits(**T), X, y, "transform"),
    "linear_probe": (
        LinearProbeClassifier(device="cpu", random_state=0),
        X,
        y,
        "predict_proba",
    ),
    "attention_probe": (
        AttentionProbeClassifier(**T, random_state=0),
        X,
        y,
        "predict_proba",
    ),
    "clip_adapter": (CLIPAdapterClassifier(**T, random_state=0), X, y, "predict_proba"),
    "tip_adapter": (TipAdapterClassifier(**T), X, y, "predict_proba"),
    "tip_adapter_f": (
        TipAdapterClassifier(**T, fine_tune=True, random_state=0),
        X,
        y,
        "predict_proba",
    ),
    "zs_linear_probe": (
        ZSLinearProbeClassifier(**T, random_state=0),
        X,
        y,
        "predict_proba",
    ),
    "gda": (GDAClassifier(), X, y, "predict_proba"),
    "gda_text": (GDAClassifier(text_features=text), X, y, "predict_proba"),
    "clip_classifier": (CLIPClassifier(**T, random_state=0), X, y, "predict_proba"),
    "featurizer": (CLIPFeaturizer(**tiny), images, None, "transform"),
    "pipeline": (
        make_clip_pipeline(TipAdapterClassifier(), **tiny),
        images,
        image_labels,
        "predict_proba",
    ),
    "visual_prompt": (
        VisualPromptClassifier(**tiny, prompt_size=8, max_epochs=1, verbose=0),
        images,
        image_labels,
        "predict_proba",
    ),
}
out.mkdir(parents=True, exist_ok=True)
for name, (estimator, inputs, labels, method) in cases.items():
    estimator.fit(inputs, labels)
    (out / f"{name}.pkl").write_bytes(pickle.dumps(estimator))
    np.save(out / f"{name}-expected.npy", getattr(estimator, method)(inputs))
np.save(out / "X.npy", X)
np.save(out / "images.npy", np.stack(images))
print(f"wrote {len(cases)} estimators with sklearn-clip {sklearn_clip.__version__}")
