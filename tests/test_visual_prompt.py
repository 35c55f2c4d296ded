"""VisualPromptClassifier on real photos with the tiny random-weight CLIP."""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline

from sklearn_clip import (
    CLIPFeaturizer,
    ImageLoadError,
    VisualPromptClassifier,
    ZeroShotClassifier,
    load_clip,
)
from sklearn_clip._visual_prompt import PAPER_TEMPLATE, WarmupCosine

from .conftest import TINY, assert_same_outputs_in_fresh_process

SIZE = 8  # prompt width on the tiny model's 64 x 64 inputs


@pytest.fixture(scope="module")
def ants_bees(photo_set):
    rows = photo_set("hymenoptera")
    train = [(path, label) for path, label, split in rows if split == "train"][::6]
    val = [(path, label) for path, label, split in rows if split == "val"][::10]
    return [p for p, _ in train], [y for _, y in train], [p for p, _ in val]


def make(**params):
    defaults = dict(
        TINY, prompt_size=SIZE, max_epochs=8, batch_size=16, random_state=0, verbose=0
    )
    return VisualPromptClassifier(**{**defaults, **params})


@pytest.fixture(scope="module")
def fitted_padding(ants_bees):
    paths, labels, _ = ants_bees
    clip = load_clip(**TINY)
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    clf = make().fit(paths, labels)
    return clf, before


def test_loss_decreases_and_only_the_prompt_trains(fitted_padding):
    clf, clip_before = fitted_padding
    losses = clf.net_.history[:, "train_loss"]
    assert losses[-1] < losses[0] - 0.01
    # CLIP is bit-for-bit unchanged, not a child of the module, not optimised.
    clip_after = load_clip(**TINY).model.state_dict()
    assert all(torch.equal(clip_before[k], clip_after[k]) for k in clip_before)
    names = {name for name, _ in clf.net_.module_.named_parameters()}
    assert names == {"pad_top", "pad_bottom", "pad_left", "pad_right"}
    optimised = sum(
        p.numel() for g in clf.net_.optimizer_.param_groups for p in g["params"]
    )
    assert optimised == 3 * (2 * SIZE * 64 + 2 * SIZE * (64 - 2 * SIZE))
    assert not any(
        isinstance(m, type(load_clip(**TINY).model)) for m in clf.net_.module_.modules()
    )


def test_padding_prompt_is_a_frame(fitted_padding):
    prompt = fitted_padding[0].prompt_
    assert prompt.shape == (3, 64, 64) and prompt.dtype == np.float32
    assert np.all(prompt[:, SIZE:-SIZE, SIZE:-SIZE] == 0.0)
    frame = np.ones((64, 64), bool)
    frame[SIZE:-SIZE, SIZE:-SIZE] = False
    assert np.mean(prompt[:, frame] != 0) > 0.99


def test_without_prompt_is_zero_shot(fitted_padding, ants_bees):
    clf, _ = fitted_padding
    _, labels, val = ants_bees
    embeddings = CLIPFeaturizer(**TINY).fit_transform(val)
    zero_shot = ZeroShotClassifier(**TINY, templates=PAPER_TEMPLATE).fit(
        embeddings[:2], ["ant", "bee"]
    )
    np.testing.assert_allclose(
        clf.predict_proba(val, use_prompt=False),
        zero_shot.predict_proba(embeddings),
        atol=1e-5,
    )
    # The prompt changes the logits.
    assert not np.allclose(
        clf.decision_function(val), clf.decision_function(val, use_prompt=False)
    )


@pytest.mark.parametrize("design", ["fixed_patch", "random_patch"])
def test_patch_designs_train(design, ants_bees):
    paths, labels, val = ants_bees
    clf = make(prompt=design, max_epochs=3).fit(paths, labels)
    prompt = clf.prompt_
    assert np.all(prompt[:, SIZE:, :] == 0) and np.all(prompt[:, :, SIZE:] == 0)
    assert np.count_nonzero(prompt[:, :SIZE, :SIZE]) > 0.99 * 3 * SIZE * SIZE
    assert clf.predict(val).shape == (len(val),)
    module = clf.net_.module_
    images = torch.zeros(4, 3, 64, 64, dtype=torch.uint8)
    if design == "random_patch":
        # Training places the patch anew on every call; prediction is repeatable.
        module.train()
        assert not torch.equal(module(images), module(images))
        module.eval()
        np.testing.assert_array_equal(clf.predict_proba(val), clf.predict_proba(val))
    else:
        module.eval()
        torch.testing.assert_close(
            module(images)[0] - module(images, use_prompt=False)[0],
            torch.as_tensor(prompt),
        )


def test_cached_and_redecoded_training_give_the_same_prompt(ants_bees):
    paths, labels, _ = ants_bees
    cached = make(max_epochs=2).fit(paths, labels)
    redecoded = make(max_epochs=2, cache_images=False).fit(paths, labels)
    np.testing.assert_allclose(cached.prompt_, redecoded.prompt_, atol=1e-5)


def test_pickle_round_trip_in_a_fresh_process(fitted_padding, ants_bees, tmp_path):
    clf, _ = fitted_padding
    _, _, val = ants_bees
    sizes = assert_same_outputs_in_fresh_process(
        [(clf, val, "predict_proba")], tmp_path
    )
    assert sizes[0] < 1_000_000


def test_new_class_names_keep_the_prompt(fitted_padding, ants_bees):
    clf, _ = fitted_padding
    _, _, val = ants_bees
    wider = clf.with_classes(["ant", "bee", "wasp"])
    assert wider.predict_proba(val).shape == (len(val), 3)
    np.testing.assert_array_equal(wider.prompt_, clf.prompt_)
    # The original keeps its two classes.
    assert clf.predict_proba(val).shape == (len(val), 2)


def test_grid_search_over_prompt_size_in_a_pipeline(ants_bees):
    paths, labels, _ = ants_bees
    pipe = Pipeline([("prompt", make(max_epochs=2))])
    sizes = [4, 8]
    search = GridSearchCV(pipe, {"prompt__prompt_size": sizes}, cv=2).fit(paths, labels)
    by_hand = [
        cross_val_score(
            Pipeline([("prompt", make(max_epochs=2, prompt_size=size))]),
            paths,
            labels,
            cv=2,
        ).mean()
        for size in sizes
    ]
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], by_hand)
    assert search.best_params_["prompt__prompt_size"] == sizes[int(np.argmax(by_hand))]
    assert (
        search.best_estimator_[-1].prompt_size
        == search.best_params_["prompt__prompt_size"]
    )


def test_save_prompt_image(fitted_padding, tmp_path):
    clf, _ = fitted_padding
    clf.save_prompt_image(tmp_path / "prompt.png")
    image = np.asarray(Image.open(tmp_path / "prompt.png"))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    # Inside the frame: CLIP's mean colour; the frame differs from it.
    mean = np.round(np.array([0.48145466, 0.4578275, 0.40821073]) * 255)
    np.testing.assert_array_equal(image[32, 32], mean)
    assert np.abs(image[:SIZE].astype(int) - mean).max() > 0


def test_bad_inputs_are_named(ants_bees, tmp_path):
    paths, labels, _ = ants_bees
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    bad = [str(tmp_path / "missing.jpg"), *paths[1:-1], str(empty)]
    with pytest.raises(ImageLoadError, match="2 of") as error:
        make().fit(bad, labels)
    assert "missing.jpg" in str(error.value) and "empty.jpg" in str(error.value)
    with pytest.raises(ValueError, match="too wide for a padding prompt"):
        make(prompt_size=32).fit(paths, labels)
    with pytest.raises(ValueError, match="not strings"):
        make().fit(paths, [0, 1] * (len(paths) // 2) + [0] * (len(paths) % 2))
    with pytest.raises(ValueError, match="single path"):
        make().fit(paths[0], labels[:1])
    with pytest.raises(NotFittedError):
        make().prompt_  # noqa: B018


def test_warmup_then_cosine_schedule():
    schedule = WarmupCosine(warmup_steps=10, total_steps=110)
    factors = [schedule(step) for step in range(110)]
    np.testing.assert_allclose(factors[:10], np.arange(1, 11) / 10)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] < 0.001


def test_integer_sample_weights_train_as_repeated_images(ants_bees):
    paths, labels, val = ants_bees
    paths, labels = paths[:4] + paths[-4:], np.asarray(labels[:4] + labels[-4:])
    assert len(set(labels)) == 2
    weights = np.array([2, 1, 1, 1, 1, 2, 1, 1])
    # One full batch per epoch: a weighted mean equals the mean over repeats.
    weighted = make(max_epochs=2, batch_size=64).fit(
        paths, labels, sample_weight=weights
    )
    repeated = make(max_epochs=2, batch_size=64).fit(
        list(np.repeat(paths, weights)), np.repeat(labels, weights)
    )
    unweighted = make(max_epochs=2, batch_size=64).fit(paths, labels)
    np.testing.assert_allclose(weighted.prompt_, repeated.prompt_, atol=1e-5)
    assert np.abs(weighted.prompt_ - unweighted.prompt_).max() > 1e-4
