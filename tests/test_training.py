"""The skorch machinery of the trained heads (_training): batches sliced from
tensors, BatchNorm with exact statistics, weighted losses."""

import warnings

import numpy as np
import pytest
import torch

from sklearn_clip import (
    AttentionProbeClassifier,
    CLIPAdapterClassifier,
    CLIPModelMismatchWarning,
    GDAClassifier,
    LinearProbeClassifier,
    TipAdapterClassifier,
    ZSLinearProbeClassifier,
)
from sklearn_clip._training import TensorBatchIterator

from .conftest import blobs


@pytest.mark.parametrize(
    "head, n_samples",
    [
        (CLIPAdapterClassifier(text_features=np.eye(3, 16)), 129),  # defaults: 128
        (LinearProbeClassifier(solver="adamw", batch_size=32), 33),
        (LinearProbeClassifier(solver="adamw", batch_size=32), 129),
        (AttentionProbeClassifier(batch_size=32, text_features=np.eye(3, 16)), 33),
        (
            TipAdapterClassifier(
                fine_tune=True, batch_size=32, text_features=np.eye(3, 16)
            ),
            33,
        ),
    ],
    ids=lambda p: str(p) if isinstance(p, int) else type(p).__name__,
)
def test_heads_fit_when_the_last_batch_has_one_row(head, n_samples):
    X, y = blobs(n_samples)
    head.set_params(device="cpu", random_state=0, max_epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CLIPModelMismatchWarning)
        head.fit(X, y)
    assert head.predict(X).shape == (n_samples,)


@pytest.mark.parametrize("n_rows, batch_size", [(33, 32), (129, 128), (65, 32), (3, 2)])
def test_batches_use_every_row_once_and_never_one_alone(n_rows, batch_size):
    dataset = torch.utils.data.TensorDataset(torch.arange(n_rows), torch.arange(n_rows))
    dataset.X, dataset.y = dataset.tensors
    batches = list(TensorBatchIterator(dataset, batch_size=batch_size, shuffle=True))
    sizes = [len(X) for X, _ in batches]
    assert len(batches) == len(TensorBatchIterator(dataset, batch_size=batch_size))
    assert sorted(torch.cat([X for X, _ in batches]).tolist()) == list(range(n_rows))
    if n_rows > batch_size:
        assert min(sizes) > 1


def test_full_batch_norm_predicts_training_data_as_trained():
    # One sample per class, two classes: a full batch of two rows. Evaluation
    # must normalise with the statistics training used (biased variance).
    X, y = blobs(2, n_classes=2)
    probe = LinearProbeClassifier(device="cpu", random_state=0).fit(X, y)
    module = probe.net_.module_
    X_tensor = torch.as_tensor(X)
    expected = module.linear(
        (X_tensor - X_tensor.mean(0))
        / torch.sqrt(X_tensor.var(0, unbiased=False) + module.norm.eps)
    )
    np.testing.assert_allclose(
        probe.decision_function(X),
        (expected[:, 1] - expected[:, 0]).detach().numpy(),
        rtol=1e-4,
        atol=1e-5,
    )
    assert probe.score(X, y) == 1.0


def _repeated(X, y, weights):
    return np.repeat(X, weights, axis=0), np.repeat(y, weights)


@pytest.mark.parametrize(
    "make, tolerance",
    [
        (lambda: GDAClassifier(), 1e-9),
        (lambda: TipAdapterClassifier(text_features=np.eye(3, 16), device="cpu"), 1e-5),
        (lambda: LinearProbeClassifier(device="cpu", random_state=0), 1e-3),
        (
            lambda: AttentionProbeClassifier(
                text_features=np.eye(3, 16), device="cpu", random_state=0
            ),
            2e-3,
        ),
        (
            lambda: ZSLinearProbeClassifier(
                text_features=np.eye(3, 16), device="cpu", random_state=0
            ),
            2e-3,
        ),
    ],
    ids=["GDA", "Tip-Adapter", "linear probe", "attention probe", "ZS linear probe"],
)
@pytest.mark.filterwarnings("ignore::sklearn_clip.CLIPModelMismatchWarning")
def test_integer_weights_train_as_repeated_rows(make, tolerance):
    X, y = blobs(30)
    weights = np.random.default_rng(0).integers(1, 4, size=30)  # 1, 2 or 3 copies
    # Logits, relative to their range (probabilities saturate on blobs).
    weighted = make().fit(X, y, sample_weight=weights).decision_function(X)
    repeated = make().fit(*_repeated(X, y, weights)).decision_function(X)
    unweighted = make().fit(X, y).decision_function(X)
    scale = np.abs(weighted).max()
    assert np.abs(weighted - repeated).max() / scale < tolerance
    assert np.abs(weighted - unweighted).max() / scale > 10 * tolerance  # they act
