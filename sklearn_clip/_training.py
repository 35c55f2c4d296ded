"""skorch machinery shared by the trained estimators: the head module contract,
BatchNorm with exact running statistics, batches sliced from tensors,
weighted losses, a colour-free epoch log and array-only persistence.
"""

import contextvars
import copy
import json
import sys

import numpy as np
import skorch.callbacks
import torch
from skorch import NeuralNetClassifier
from skorch.history import History

from ._torch_utils import global_rng_untouched


class HeadModule(torch.nn.Module):
    """What a trained head's module provides.

    ``forward(X)`` maps a batch of embeddings (or of images, for the visual
    prompt) to class logits of shape ``(n_samples, n_classes)``.
    ``penalized_weights()`` lists the tensors that the estimator's ``alpha``
    penalises (``alpha / 2 * ||w||^2`` on the summed loss); the default is
    none. Everything a module needs is given to its constructor: the
    estimators build it in ``_build_module(n_features, n_classes,
    training_data)``, where ``training_data`` is ``(X, sample_weight)`` at
    fit time and ``None`` when a stored estimator is rebuilt (the stored
    arrays then overwrite whatever the constructor made).
    """

    def penalized_weights(self):
        return []


#: Per-sample weights of the batch being trained on (None: unweighted); set
#: by :class:`HeadNet` around each training forward pass.
_BATCH_WEIGHTS = contextvars.ContextVar("sklearn_clip_batch_weights", default=None)


class AveragedBatchNorm(torch.nn.BatchNorm1d):
    """BatchNorm whose running statistics are the plain average of the batch
    statistics that training normalised with.

    With the default momentum (0.1) the running statistics start at mean 0,
    variance 1 and need ~50 updates to forget that; full-batch training makes
    only tens of updates, and CLIP features have per-dimension variances near
    1 / 512, so evaluation-mode outputs would be far off. A cumulative average
    is exact after one full batch. torch stores the *unbiased* batch variance
    while training normalises with the biased one, which at one sample per
    class (a full batch of 2 rows for 2 classes) scales evaluation outputs by
    ``sqrt(1/2)``; here the stored variance is the one training used, so a
    full-batch head predicts its training data exactly as it was trained.
    """

    def __init__(self, n_features, affine=True, sample_weighted=True):
        super().__init__(n_features, affine=affine, momentum=None)
        # False for layers that normalise something else than the samples
        # (the attention probe's class text rows).
        self.sample_weighted = sample_weighted

    def forward(self, X):
        if not self.training:
            return super().forward(X)
        weights = _BATCH_WEIGHTS.get() if self.sample_weighted else None
        if weights is None:
            mean = X.mean(dim=0)
            var = X.var(dim=0, unbiased=False)
        else:  # the statistics of the data with rows repeated by weight
            weights = (weights / weights.sum()).unsqueeze(1)
            mean = (weights * X).sum(dim=0)
            var = (weights * (X - mean).pow(2)).sum(dim=0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            weight = 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach(), weight)
            self.running_var.lerp_(var.detach(), weight)
        normalized = (X - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            normalized = normalized * self.weight + self.bias
        return normalized


def batch_norm_layer(n_features, affine=True, sample_weighted=True):
    """:class:`AveragedBatchNorm` (see there why not torch's default)."""
    return AveragedBatchNorm(n_features, affine=affine, sample_weighted=sample_weighted)


class TensorBatchIterator:
    """skorch iterator slicing in-memory tensors into (shuffled) batches.

    torch's DataLoader fetches and re-stacks every row one by one, which on
    CLIP embeddings costs more than the training step itself; indexing the
    tensors with a permutation yields the same batches at a fraction of the
    cost. ``batch_size=-1`` yields the whole dataset as one batch.

    A last batch of a single row is merged into the one before it: BatchNorm
    cannot normalise one row, and dropping it would leave a sample untrained
    in that epoch. Every sample is used once per epoch. ``generator`` (a
    ``torch.Generator``) draws the shuffling order, so that concurrent fits
    in threads do not share torch's global random stream.
    """

    def __init__(self, dataset, batch_size=-1, shuffle=False, generator=None, **_):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator

    def _tensors(self):
        data = self.dataset
        if isinstance(data, torch.utils.data.Subset):  # after a validation split
            rows = torch.as_tensor(data.indices)
            return _take(data.dataset.X, rows), data.dataset.y[rows]
        return data.X, data.y

    def __iter__(self):
        X, y = self._tensors()  # y is None at prediction time
        n_rows = len(self.dataset)
        if self.batch_size == -1 or self.batch_size >= n_rows:
            yield X, y  # one full batch: the order does not matter
            return
        order = (
            torch.randperm(n_rows, generator=self.generator)
            if self.shuffle
            else torch.arange(n_rows)
        )
        n_batches = len(self)
        for batch in range(n_batches):
            start = batch * self.batch_size
            stop = n_rows if batch == n_batches - 1 else start + self.batch_size
            rows = order[start:stop]
            yield _take(X, rows), None if y is None else y[rows]

    def __len__(self):
        n_rows = len(self.dataset)
        if self.batch_size == -1 or self.batch_size >= n_rows:
            return 1
        n_batches = -(-n_rows // self.batch_size)
        if n_rows % self.batch_size == 1:
            n_batches -= 1  # the single last row joins the previous batch
        return n_batches


#: Rows per forward pass when predicting: memory stays bounded on any input.
PREDICT_ROWS = 4096


def float64_logits(module, X, n_classes):
    """Logits of a trained head module for embeddings ``X``, in float64.

    The head is trained in float32; evaluating a float64 copy of it makes
    each row's logits independent of the rows predicted with it (float32
    matrix products round differently for a single row than inside a batch,
    and differently on AVX2 and AVX-512 CPUs: up to 1e-6 on probabilities),
    at a cost that is small next to the training. Devices without float64
    (Apple's MPS) evaluate on the CPU.
    """
    device = next(module.buffers(), next(module.parameters(), None))
    device = torch.device("cpu") if device is None else device.device
    if device.type == "mps":
        device = torch.device("cpu")
    evaluated = copy.deepcopy(module).to(device=device, dtype=torch.float64).eval()
    X = np.asarray(X, dtype=np.float64)
    logits = np.empty((len(X), n_classes), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(X), PREDICT_ROWS):
            rows = torch.from_numpy(X[start : start + PREDICT_ROWS]).to(device)
            logits[start : start + PREDICT_ROWS] = evaluated(rows).cpu().numpy()
    return logits


def _take(X, rows):
    """Rows of a tensor, or of each tensor of a dict (``{"X", "sample_weight"}``)."""
    if isinstance(X, dict):
        return {key: value[rows] for key, value in X.items()}
    return X[rows]


class NetAsArraysMixin:
    """Pickles (and skops files) hold the fitted skorch net as plain arrays.

    ``net_`` is replaced by its module's ``state_dict`` as numpy arrays, its
    history as plain lists and dicts, and the few numbers needed to build the
    module again (``_net_config``); loading rebuilds the net on the
    estimator's device and loads the arrays. So a stored estimator contains
    no torch objects (skops can load it without trusting any), no optimizer
    state, and loads on a CPU-only machine without skorch's device warning.
    Continued training after loading (``warm_start``) starts a new optimizer.

    Subclasses implement ``_net_config(net)`` and ``_rebuild_net(arrays,
    config)``; the latter returns an initialised net whose module has the
    shapes of ``arrays``.
    """

    #: Module buffers rebuilt from fitted attributes (the class text rows),
    #: so not stored twice.
    _rebuilt_buffers = ()

    def __getstate__(self):
        state = super().__getstate__()
        net = state.pop("net_", None)
        if net is not None:
            state["_net_arrays"] = {
                name: tensor.detach().cpu().numpy()
                for name, tensor in net.module_.state_dict().items()
                if name not in self._rebuilt_buffers
            }
            # Epoch records hold floats, ints, bools and lists of them.
            state["_net_history"] = json.loads(
                json.dumps(list(net.history), default=float)
            )
            state["_net_config"] = self._net_config(net)
        return state

    def _after_load(self):
        super()._after_load()
        arrays = self.__dict__.pop("_net_arrays", None)
        if arrays is None:
            return
        history = self.__dict__.pop("_net_history")
        config = self.__dict__.pop("_net_config")
        with global_rng_untouched():  # the stored arrays replace the random init
            net = self._rebuild_net(arrays, config)
        # Copies: the arrays may be read-only memory maps (joblib mmap_mode).
        missing, unexpected = net.module_.load_state_dict(
            {name: torch.tensor(np.array(a)) for name, a in arrays.items()},
            strict=False,
        )
        if unexpected or set(missing) - set(self._rebuilt_buffers):
            raise ValueError(
                f"The stored {type(self).__name__} does not match its module: missing "
                f"{sorted(set(missing) - set(self._rebuilt_buffers))}, unexpected "
                f"{sorted(unexpected)}."
            )
        net.history = History(history)
        self.net_ = net


class PrintLog(skorch.callbacks.PrintLog):
    """skorch's per-epoch table; the best values are coloured only when the
    output is a terminal (no ANSI escape codes in log files).
    """

    def format_row(self, row, key, color):
        if not sys.stdout.isatty():
            row = {k: False if k.endswith("_best") else v for k, v in row.items()}
        return super().format_row(row, key, color)


class PlainLogMixin:
    """A skorch net whose default ``print_log`` is :class:`PrintLog`."""

    def get_default_callbacks(self):
        return [
            (name, PrintLog() if name == "print_log" else callback)
            for name, callback in super().get_default_callbacks()
        ]


class HeadNet(PlainLogMixin, NeuralNetClassifier):
    """skorch classifier adding an L2 penalty on the module's head weights.

    The penalty ``alpha / (2 n_samples) * ||W||^2`` on the mean loss equals
    ``alpha / 2 * ||W||^2`` on the summed loss, the scale of scikit-learn's
    ``1 / C``, so one ``alpha`` means the same at every shot count.

    With sample weights, X is ``{"X": embeddings, "sample_weight": w}``: the
    loss is the weighted mean, BatchNorm uses weighted statistics and
    ``n_samples`` is the sum of the weights, so integer weights train as
    repeated rows would.
    """

    def __init__(self, *args, alpha=0.0, n_samples=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = alpha
        self.n_samples = n_samples

    def infer(self, x, **fit_params):
        if not isinstance(x, dict):
            return super().infer(x, **fit_params)
        # Weighted training data: {"X": embeddings, "sample_weight": weights}.
        weights = x["sample_weight"].to(self.device) if self.module_.training else None
        token = _BATCH_WEIGHTS.set(weights)
        try:
            return super().infer(x["X"], **fit_params)
        finally:
            _BATCH_WEIGHTS.reset(token)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        if isinstance(X, dict):
            weights = X["sample_weight"].to(y_pred.device)
            losses = torch.nn.functional.cross_entropy(
                y_pred, y_true.to(y_pred.device), reduction="none"
            )
            loss = (weights * losses).sum() / weights.sum()
        else:
            loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training and self.alpha > 0:  # see HeadModule.penalized_weights
            squares = sum(w.pow(2).sum() for w in self.module_.penalized_weights())
            loss = loss + self.alpha / (2 * self.n_samples) * squares
        return loss
