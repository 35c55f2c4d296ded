"""What a new user meets first: one rule for positional arguments, folders
that cannot mislead, quiet and readable output, pickles of documented size."""

import inspect
import pickle
import sys

import numpy as np
import pytest

import sklearn_clip
from sklearn_clip import (
    CLIPAdapterClassifier,
    CLIPFeaturizer,
    GDAClassifier,
    LinearProbeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
    all_estimators,
    few_shot_indices,
    load_clip,
    load_image_folder,
)

from ..conftest import TINY

ESTIMATORS = [cls for _, cls in all_estimators()]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_only_model_and_pretrained_or_the_wrapped_estimator_may_be_positional(
    estimator,
):
    parameters = list(inspect.signature(estimator.__init__).parameters.values())[1:]
    positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    # A meta-estimator takes the estimator it wraps first, as scikit-learn's do.
    assert positional in ([], ["model", "pretrained"], ["estimator"])
    if positional == ["model", "pretrained"]:
        instance = estimator("ViT-B-32", "openai")
        assert (instance.model, instance.pretrained) == ("ViT-B-32", "openai")


def test_a_folder_of_split_folders_is_not_read_as_classes(tmp_path):
    for split in ("train", "val"):
        for label in ("ants", "bees"):
            (tmp_path / split / label).mkdir(parents=True)
            (tmp_path / split / label / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="split folders.*split='train'"):
        load_image_folder(tmp_path)
    paths, labels = load_image_folder(tmp_path, split="val")
    assert sorted(set(labels)) == ["ants", "bees"] and all("/val/" in p for p in paths)
    with pytest.raises(ValueError, match="no split folder 'test'"):
        load_image_folder(tmp_path, split="test")


def test_random_weights_warning_points_at_the_callers_line(recwarn):
    sklearn_clip.clear_clip_cache()
    CLIPFeaturizer(**TINY).fit_transform([np.zeros((8, 8, 3), np.uint8)])
    warning = next(w for w in recwarn if "random weights" in str(w.message))
    assert warning.filename == __file__


def test_random_weights_log_nothing_beyond_the_warning(capfd):
    sklearn_clip.clear_clip_cache()
    with pytest.warns(UserWarning, match="random weights"):
        load_clip(**TINY)
    assert capfd.readouterr().err.strip() == ""


def test_few_shot_warning_prints_plain_labels():
    y = np.array([0, 0, 0, 1])
    with pytest.warns(UserWarning) as record:
        few_shot_indices(y, 2, random_state=0)
    message = str(record[0].message)
    assert "[1]" in message and "np.int64" not in message


def test_verbose_training_log_has_no_colour_codes_outside_a_terminal(capsys):
    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40) % 2
    LinearProbeClassifier(
        verbose=1, device="cpu", early_stopping=True, validation_fraction=0.25
    ).fit(X, y)
    printed = capsys.readouterr().out
    assert "train_loss" in printed and "\x1b[" not in printed


@pytest.fixture(scope="module")
def cars(load_features):
    return load_features("stanford_cars")


def test_pickle_sizes_match_the_documented_ones(cars):
    # docs/user_guide/persistence.rst: zero-shot K x D floats, GDA 2 K x D,
    # Tip-Adapter the N x D cache, probes and adapters kB to a few MB;
    # nothing else of size (no optimizer state, never CLIP).
    train = few_shot_indices(cars["y_train"], 4, random_state=0)
    X, y = cars["X_train"][train], cars["y_train"][train]
    text = cars["text_features"]
    n_classes, dim = text.shape
    floats = 4  # bytes
    class_text = n_classes * dim * floats
    budget = {  # documented content; 64 kB for everything small besides it
        "zero-shot": (ZeroShotClassifier(text_features=text), class_text),
        "GDA": (GDAClassifier(), 2 * n_classes * dim * 8),
        "Tip-Adapter": (
            TipAdapterClassifier(text_features=text, device="cpu"),
            class_text + len(X) * dim * floats,
        ),
        "linear probe": (LinearProbeClassifier(device="cpu"), n_classes * dim * floats),
        "CLIP-Adapter": (
            CLIPAdapterClassifier(text_features=text, device="cpu"),
            class_text + 2 * dim * dim // 4 * floats,
        ),
    }
    for name, (estimator, documented) in budget.items():
        if estimator.get_params().get("text_features") is not None:
            documented += class_text  # the parameter itself is kept too
        size = len(pickle.dumps(estimator.fit(X, y)))
        assert size < documented + 64_000, (name, size, documented)
        assert size > documented * 0.9, (name, size, documented)  # it is all there


def test_importing_the_package_does_not_load_torch():
    import subprocess

    code = "import sys, sklearn_clip; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
