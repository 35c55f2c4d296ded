"""Shared base of the trainable heads on CLIP embeddings, trained with skorch."""

import contextlib
import contextvars
import json
import sys
from numbers import Integral, Real

import numpy as np
import skorch.callbacks
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import EarlyStopping
from skorch.dataset import ValidSplit
from skorch.history import History
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import (
    BaseCLIPEstimator,
    ClassifierOutputMixin,
    encode_labels,
    resolve_sample_weight,
    validate_embeddings,
    warn_unused_parameters,
)
from ._clip import loading_device, resolve_device
from ._validation import DEVICE_CONSTRAINT

def _total_weight(sample_weight, n_samples):
    return n_samples if sample_weight is None else float(np.sum(sample_weight))


TRAINING_PARAMETER_CONSTRAINTS = {
    "class_weight": [dict, StrOptions({"balanced"}), None],
    "solver": [StrOptions({"lbfgs", "adamw"})],
    "alpha": [Interval(Real, 0, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither"), None],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"full"})],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "warm_start": ["boolean"],
    "device": DEVICE_CONSTRAINT,
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}

# Inner iterations per L-BFGS step; one skorch epoch is one step. The
# optimiser keeps its curvature history across steps.
_LBFGS_ITERATIONS = 8

# Fused AdamW runs on CPU from torch 2.4 on (on CUDA earlier).
_FUSED_ADAMW = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 4)


def draw_seed(random_state):
    """An int seed drawn from a scikit-learn ``random_state``."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@contextlib.contextmanager
def seeded_torch(random_state):
    """Seed torch (initialisation, shuffling) from ``random_state`` without
    touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw_seed(random_state))
        yield


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
    in that epoch. Every sample is used once per epoch.
    """

    def __init__(self, dataset, batch_size=-1, shuffle=False, **_):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle

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
        order = torch.randperm(n_rows) if self.shuffle else torch.arange(n_rows)
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
            state["_net_history"] = json.loads(json.dumps(list(net.history), default=float))
            state["_net_config"] = self._net_config(net)
        return state

    def _after_load(self):
        super()._after_load()
        arrays = self.__dict__.pop("_net_arrays", None)
        if arrays is None:
            return
        history = self.__dict__.pop("_net_history")
        config = self.__dict__.pop("_net_config")
        with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG alone
            net = self._rebuild_net(arrays, config)
        # Copies: the arrays may be read-only memory maps (joblib mmap_mode).
        missing, unexpected = net.module_.load_state_dict(
            {name: torch.tensor(np.array(a)) for name, a in arrays.items()}, strict=False
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
    output is a terminal (no ANSI escape codes in log files)."""

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
        if training and self.alpha > 0:
            squares = sum(w.pow(2).sum() for w in self.module_.penalized_weights())
            loss = loss + self.alpha / (2 * self.n_samples) * squares
        return loss


class EmbeddingHeadClassifier(
    NetAsArraysMixin, ClassifierOutputMixin, ClassifierMixin, BaseCLIPEstimator
):
    """Base of the skorch-trained heads; subclasses define ``_build_module``.

    Handles input validation, label encoding (any labels; ``predict`` returns
    them), seeding, device resolution, the skorch net (``net_``), optional
    early stopping on a seeded, stratified validation fraction, ``warm_start``
    and ``partial_fit``. Nothing is held out unless ``early_stopping=True``.
    """

    _parameter_constraints = dict(TRAINING_PARAMETER_CONSTRAINTS)
    _fitted_attributes = ("classes_", "n_features_in_", "net_")
    # Learning rate per solver when ``lr=None``; heads may override.
    _default_lr = {"lbfgs": 1.0, "adamw": 1e-3}

    # -- subclass interface -------------------------------------------------
    def _build_module(self, n_features, n_classes):
        raise NotImplementedError

    def _prepare_fit(self, X, y_encoded, sample_weight):
        """Hook run after ``classes_`` is set (text heads embed class names);
        ``sample_weight`` is None or the resolved per-sample weights."""

    # -- fitting --------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the head on embeddings.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.
        y : array-like of shape (n_samples,)
            Labels of any type (strings, non-contiguous integers, ...).
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the loss (and in BatchNorm statistics):
            an integer weight trains as that many copies of the row would.
            Multiplied by ``class_weight``.

        Returns
        -------
        self
        """
        X, y = validate_embeddings(self, X, y, reset=not self._continuing())
        if self._continuing():
            y_encoded = self._encode_known(y)
        else:
            self.classes_, y_encoded = encode_labels(y)
            if len(self.classes_) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes; "
                    f"got 1 class: {self.classes_.tolist()}"
                )
            self._check_training_parameters(y_encoded)
        weights = self._sample_weights(X, y, sample_weight)
        if not self._continuing():
            self._prepare_fit(X, y_encoded, weights)
        with self._seeded():
            if not self._continuing():
                self.net_ = self._new_net(_total_weight(weights, len(y)))
            self._train(X, y_encoded, epochs=None, sample_weight=weights)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train for one more epoch, starting from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, default=None
            All labels that will ever occur; required on the first call
            unless ``y`` already contains every class.
        sample_weight : array-like of shape (n_samples,), default=None
            As in :meth:`fit`.

        Returns
        -------
        self
        """
        first = not hasattr(self, "net_")
        if first:
            self._validate_params()
        X, y = validate_embeddings(self, X, y, reset=first)
        if first:
            self.classes_, _ = encode_labels(y if classes is None else np.asarray(classes))
        y_encoded = self._encode_known(y)
        weights = self._sample_weights(X, y, sample_weight)
        if first:
            self._check_training_parameters(y_encoded)
            self._prepare_fit(X, y_encoded, weights)
        with self._seeded():
            if first:
                self.net_ = self._new_net(_total_weight(weights, len(y)))
            self._train(X, y_encoded, epochs=1, sample_weight=weights)
        return self

    def _sample_weights(self, X, y, sample_weight):
        """Per-sample weights from ``sample_weight`` and ``class_weight``, or
        None when every weight is 1 (the unweighted, faster path)."""
        return resolve_sample_weight(X, y, sample_weight, self.class_weight)

    def _check_training_parameters(self, y_encoded):
        """Refuse or flag training settings the data makes impossible or moot."""
        if not self.early_stopping:
            warn_unused_parameters(
                self, ["validation_fraction", "n_iter_no_change"],
                "unless early_stopping=True",
            )
            return
        counts = np.bincount(y_encoded, minlength=len(self.classes_))
        n_valid = int(np.ceil(self.validation_fraction * len(y_encoded)))
        if counts.min() < 2 or n_valid < len(self.classes_):
            raise ValueError(
                f"early_stopping=True holds out validation_fraction="
                f"{self.validation_fraction} of the training samples, stratified by "
                f"class; that needs at least 2 samples in every class and a held-out "
                f"part of at least one sample per class ({len(self.classes_)} "
                f"classes), but the smallest class has {counts.min()} sample(s) and "
                f"the held-out part would have {n_valid}. Use early_stopping=False "
                "(the default) or a larger validation_fraction."
            )

    def _continuing(self):
        return self.warm_start and hasattr(self, "net_")

    def _encode_known(self, y):
        y = np.asarray(y)
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(
                f"y contains labels not seen in the first fit: {unknown.tolist()}"
            )
        return np.searchsorted(self.classes_, y)

    def _seeded(self):
        return seeded_torch(self.random_state)

    def _seed(self):
        return draw_seed(self.random_state)

    def _new_net(self, n_samples, device=None):
        solver = self.solver
        lr = self._default_lr[solver] if self.lr is None else self.lr
        if solver == "lbfgs":
            optimizer = torch.optim.LBFGS
            optimizer_kwargs = dict(
                optimizer__max_iter=_LBFGS_ITERATIONS,
                optimizer__history_size=10,
                optimizer__line_search_fn="strong_wolfe",
            )
        else:
            optimizer = torch.optim.AdamW
            # One fused kernel per step instead of several per parameter.
            optimizer_kwargs = {"optimizer__fused": True} if _FUSED_ADAMW else {}
        callbacks = []
        train_split = None
        if self.early_stopping:
            train_split = ValidSplit(
                self.validation_fraction, stratified=True, random_state=self._seed()
            )
            callbacks.append(
                ("early_stopping", EarlyStopping(patience=self.n_iter_no_change,
                                                 load_best=True))
            )
        full = self.batch_size == "full"
        return HeadNet(
            module=self._build_module(self.n_features_in_, len(self.classes_)),
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=optimizer,
            lr=lr,
            max_epochs=self.max_epochs,
            batch_size=-1 if full else self.batch_size,
            iterator_train=TensorBatchIterator,
            iterator_valid=TensorBatchIterator,
            iterator_train__shuffle=True,
            train_split=train_split,
            callbacks=callbacks,
            device=(device or resolve_device(self.device)).type,
            verbose=self.verbose,
            alpha=self.alpha,
            n_samples=n_samples,
            **optimizer_kwargs,
        )

    def _train(self, X, y_encoded, epochs, sample_weight=None):
        X_tensor = torch.as_tensor(np.asarray(X, dtype=np.float32))
        y_tensor = torch.as_tensor(y_encoded, dtype=torch.int64)
        if sample_weight is not None:
            X_tensor = {"X": X_tensor,
                        "sample_weight": torch.as_tensor(sample_weight, dtype=torch.float32)}
        # partial_fit initialises a new net and continues a warm one;
        # epochs=None means max_epochs.
        self.net_.partial_fit(X_tensor, y_tensor, epochs=epochs)
        if not self.warm_start and epochs is None:
            # L-BFGS keeps ~20 weight-sized vectors of history: dropping them
            # keeps pickles small; only continued training would need them.
            self.net_.optimizer_.state.clear()

    # -- persistence --------------------------------------------------------------
    def _net_config(self, net):
        return {"n_samples": int(net.n_samples)}

    def _rebuild_net(self, arrays, config):
        net = self._new_net(config["n_samples"], device=loading_device(self.device))
        net.initialize()
        return net

    # -- prediction -------------------------------------------------------------
    def _logits(self, X):
        X_tensor = torch.as_tensor(np.asarray(X, dtype=np.float32))
        return self.net_.forward(X_tensor).numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
