"""Pipelines in GridSearchCV and cross_val_score, in parallel, at odd sizes.

Every head runs behind ``CLIPFeaturizer`` with its defaults (one embedding
cache shared by all processes) on real photos, and on real CLIP features
without the featurizer; ``n_jobs=2`` must give the results of ``n_jobs=1``.
Sizes: 33, 129 and 161 photos (last mini-batches of one row, folds of
uneven size) and one training sample per class.
"""

import warnings

import numpy as np
import pytest
import torch
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    CLIPFeaturizer,
    GDAClassifier,
    LinearProbeClassifier,
    TipAdapterClassifier,
    ZeroShotClassifier,
    ZSLinearProbeClassifier,
    few_shot_indices,
    make_clip_pipeline,
)

from ..conftest import TINY

# (head, a two-value grid over one of its parameters)
HEADS = {
    "linear probe": (LinearProbeClassifier(random_state=0), {"alpha": [0.1, 1.0]}),
    "attention probe": (
        AttentionProbeClassifier(random_state=0),
        {"ratio": [0.2, 0.4]},
    ),
    "CLIP-Adapter": (CLIPAdapterClassifier(random_state=0), {"ratio": [0.2, 0.6]}),
    "Tip-Adapter": (TipAdapterClassifier(), {"sharpness": [3.0, 5.5]}),
    "ZS linear probe": (
        ZSLinearProbeClassifier(random_state=0),
        {"alpha": [0.01, 0.1]},
    ),
    "GDA": (GDAClassifier(), {"shrinkage": [0.2, 0.6]}),
    "zero-shot": (ZeroShotClassifier(), {"templates": ["simple", "a photo of {}."]}),
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::sklearn_clip.CLIPModelMismatchWarning"),
    pytest.mark.filterwarnings("ignore:The least populated class:UserWarning"),
]


@pytest.fixture(scope="module")
def photos(photo_set, tmp_path_factory):
    """``(paths, labels)`` by size, and the shared embedding cache folder."""
    ants_bees = photo_set("hymenoptera")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ants_bees))
    sets = {
        n: (
            [ants_bees[i][0] for i in order[:n]],
            np.array([ants_bees[i][1] for i in order[:n]]),
        )
        for n in (33, 129, 161)
    }
    cifar = [row for row in photo_set("cifar10") if row[2] == "train"]
    labels = np.array([label for _, label, _ in cifar])
    two_each = few_shot_indices(labels, 2, random_state=0)
    sets["1 per class"] = ([cifar[i][0] for i in two_each], labels[two_each])
    cache = tmp_path_factory.mktemp("embedding-cache")
    # Warm the shared cache once: embeddings computed concurrently by workers
    # with other thread counts differ in the last float bits, and whichever
    # process stores an image first would then decide the comparison below.
    # (Embedding inside workers is tested on its own, further down.)
    every_path = sorted({path for paths, _ in sets.values() for path in paths})
    CLIPFeaturizer(**TINY, cache_dir=str(cache)).fit_transform(every_path)
    return sets, cache


def _cv(size):
    # Two stratified folds of two samples per class train on one per class.
    return StratifiedKFold(2 if size == "1 per class" else 3)


@pytest.mark.parametrize("size", [33, 129, 161, "1 per class"])
@pytest.mark.parametrize("name", list(HEADS))
def test_pipeline_in_parallel_grid_search_and_cross_validation(photos, name, size):
    sets, cache = photos
    paths, labels = sets[size]
    head, grid = HEADS[name]
    pipe = make_clip_pipeline(head, **TINY, cache_dir=str(cache))
    grid = {f"head__{key}": values for key, values in grid.items()}
    searches = [
        GridSearchCV(pipe, grid, cv=_cv(size), n_jobs=n_jobs).fit(paths, labels)
        for n_jobs in (2, 1)
    ]
    assert searches[0].best_params_ == searches[1].best_params_
    np.testing.assert_array_equal(
        searches[0].cv_results_["mean_test_score"],
        searches[1].cv_results_["mean_test_score"],
    )
    cv = _cv(size) if size == "1 per class" else 5
    scores = [
        cross_val_score(pipe, paths, labels, cv=cv, n_jobs=n_jobs) for n_jobs in (2, 1)
    ]
    np.testing.assert_array_equal(scores[0], scores[1])
    assert searches[1].predict(paths[:3]).shape == (3,)


@pytest.mark.parametrize("name", list(HEADS))
def test_heads_on_real_features_in_parallel(load_features, name):
    cars = load_features("stanford_cars")
    # 161 of the 320 samples of the first 20 classes (about 8 per class)
    rows = np.flatnonzero(cars["y_train"] < 20)
    rows = np.random.default_rng(0).permutation(rows)[:161]
    X, y = cars["X_train"][rows], cars["y_train"][rows]
    head = clone(HEADS[name][0])
    if "text_features" in head.get_params():
        head.set_params(text_features=cars["text_features"][:20])
    scores = [cross_val_score(head, X, y, cv=5, n_jobs=n_jobs) for n_jobs in (1, 2)]
    np.testing.assert_array_equal(scores[0], scores[1])
    assert scores[0].mean() > 2 / 20  # far above chance on real features


def _embed_in_worker(paths, num_workers):
    featurizer = CLIPFeaturizer(**TINY, batch_size=2, num_workers=num_workers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embeddings = featurizer.fit_transform(paths)
    auto = featurizer.set_params(num_workers="auto")._workers(1000, torch.device("cpu"))
    return embeddings, auto, [str(w.message) for w in caught]


def test_featurizer_decodes_with_threads_inside_joblib_workers(photo_set):
    # A DataLoader worker process started inside a loky worker fails with
    # "'Process' object has no attribute 'env'"; inside workers the featurizer
    # decodes with threads ("auto") or warns and does so (explicit count).
    paths = [path for path, _, _ in photo_set("cifar10")[:6]]
    expected = CLIPFeaturizer(**TINY, batch_size=2, num_workers=0).fit_transform(paths)
    results = Parallel(n_jobs=2)(
        delayed(_embed_in_worker)(paths, n) for n in (1, "auto")
    )
    for embeddings, auto_workers, _ in results:
        np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)
        assert auto_workers == 0
    assert any("num_workers=1 ignored" in m for m in results[0][2])
    assert not any("num_workers" in m for m in results[1][2])
