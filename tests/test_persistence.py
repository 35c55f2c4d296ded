"""Every fitted estimator round-trips through skops (trusting only the
package's own classes) and joblib, predicting bit-identically in a fresh
process; stored files hold arrays, never torch objects or optimizer state."""

from pathlib import Path

import numpy as np
import pytest

from sklearn_clip import (
    SKOPS_TRUSTED_TYPES,
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    CLIPClassifier,
    GDAClassifier,
    LinearProbeClassifier,
    TipAdapterClassifier,
    TransCLIPClassifier,
    VisualPromptClassifier,
    ZeroShotClassifier,
    ZeroShotLogits,
    ZSLinearProbeClassifier,
    all_estimators,
    make_clip_pipeline,
)

from .conftest import TINY, assert_same_outputs_in_fresh_process

skops_io = pytest.importorskip("skops.io")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::sklearn_clip.CLIPModelMismatchWarning"),
]


@pytest.fixture(scope="module")
def fitted(load_features, photo_set):
    cars = load_features("stanford_cars")
    rows = np.flatnonzero(cars["y_train"] < 10)
    X, y = cars["X_train"][rows], cars["y_train"][rows]
    X_test = cars["X_test"][:40]
    text = dict(text_features=cars["text_features"][:10], device="cpu")
    heads = [
        ZeroShotClassifier(**text),
        LinearProbeClassifier(device="cpu", random_state=0),
        AttentionProbeClassifier(**text, random_state=0),
        CLIPAdapterClassifier(**text, random_state=0),
        TipAdapterClassifier(**text),
        TipAdapterClassifier(**text, fine_tune=True, random_state=0),
        ZSLinearProbeClassifier(**text, random_state=0),
        GDAClassifier(),
        GDAClassifier(**text),
        CLIPClassifier(**text, random_state=0),
    ]
    cases = [(head.fit(X, y), X_test, "predict_proba") for head in heads]
    unlabelled = cars["X_test"][np.isin(cars["y_test"], np.arange(10))]
    transductive = TransCLIPClassifier(ZeroShotClassifier(**text), fallback="never")
    transductive.fit(np.vstack([X, unlabelled]), np.r_[y, np.full(len(unlabelled), -1)])
    cases.append((transductive, X_test, "predict_proba"))
    cases.append((ZeroShotLogits(**text).fit(X, y), X_test, "transform"))
    rows = photo_set("cifar10")
    photos = [row for row in rows if row[1] == "cat"][:6] + [
        row for row in rows if row[1] == "dog"
    ][:6]
    paths = [path for path, _, _ in photos]
    labels = [label for _, label, _ in photos]
    pipe = make_clip_pipeline(TipAdapterClassifier(), **TINY).fit(paths, labels)
    cases.append((pipe, paths[:6], "predict_proba"))
    prompt = VisualPromptClassifier(**TINY, prompt_size=8, max_epochs=1, verbose=0)
    cases.append((prompt.fit(paths, labels), paths[:6], "predict_proba"))
    return cases


def test_every_public_estimator_is_round_tripped(fitted):
    stored = set()
    for estimator, _, _ in fitted:
        steps = getattr(estimator, "steps", [(None, estimator)])
        stored.update(type(step) for _, step in steps)
    assert {cls for _, cls in all_estimators()} <= stored
    assert SKOPS_TRUSTED_TYPES == sorted(
        f"{cls.__module__}.{cls.__qualname__}" for _, cls in all_estimators()
    )


def test_skops_round_trip_trusts_only_the_package_classes(fitted, tmp_path):
    for estimator, _, _ in fitted:
        untrusted = skops_io.get_untrusted_types(data=skops_io.dumps(estimator))
        assert set(untrusted) <= set(SKOPS_TRUSTED_TYPES), untrusted
    assert_same_outputs_in_fresh_process(fitted, tmp_path, file_format="skops")


def test_joblib_round_trip_in_a_fresh_process(fitted, tmp_path):
    sizes = assert_same_outputs_in_fresh_process(fitted, tmp_path)
    # Nothing but the head's arrays: the largest here is the fine-tuned
    # Tip-Adapter (160 keys x 512 floats + text rows + history), far below
    # a megabyte; no optimizer state, never CLIP.
    assert max(sizes) < 1_000_000


def test_loaded_heads_keep_history_and_continue_training(fitted):
    probe = fitted[1][0]
    loaded = skops_io.loads(skops_io.dumps(probe), trusted=SKOPS_TRUSTED_TYPES)
    assert [row["epoch"] for row in loaded.net_.history] == [
        row["epoch"] for row in probe.net_.history
    ]
    assert not loaded.net_.optimizer_.state  # a fresh optimizer, nothing stored


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="needs a CPU-only machine"
)
def test_a_head_stored_with_cuda_loads_on_a_cpu_only_machine(fitted):
    import pickle

    probe, X_test, _ = fitted[1]
    state = probe.__getstate__()
    state["device"] = "cuda"  # as stored by a fit on a GPU machine
    clone = type(probe).__new__(type(probe))
    with pytest.warns(UserWarning, match="device='cuda' is not available"):
        clone.__setstate__(state)
    np.testing.assert_array_equal(
        clone.predict_proba(X_test), probe.predict_proba(X_test)
    )
    assert pickle.loads(pickle.dumps(probe)).net_.device == "cpu"


STORED = Path(__file__).parent / "data" / "stored-0.1.0"


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in STORED.glob("*.pkl")), ids=lambda name: name
)
def test_estimators_stored_by_0_1_0_load_and_predict(name):
    # Written by sklearn-clip 0.1.0 (tests/data/make_stored_estimators.py):
    # this version loads them and predicts what they predicted then, up to
    # the float32 rounding that 0.1.0's predictions had (now float64).
    import pickle

    estimator = pickle.loads((STORED / f"{name}.pkl").read_bytes())
    expected = np.load(STORED / f"{name}-expected.npy")
    inputs = (
        list(np.load(STORED / "images.npy"))
        if name in ("featurizer", "pipeline", "visual_prompt")
        else np.load(STORED / "X.npy")
    )
    method = (
        "transform" if name in ("featurizer", "zero_shot_logits") else "predict_proba"
    )
    got = getattr(estimator, method)(inputs)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    if method == "predict_proba":
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
