"""Bases of the trainable heads on CLIP embeddings: input checks, labels,
seeding, the skorch net, and, for heads that use class text, the text.
"""

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from skorch.callbacks import EarlyStopping
from skorch.dataset import ValidSplit

from ._base import (
    BaseCLIPEstimator,
    ClassifierOutputMixin,
    TextClassesMixin,
    encode_labels,
    encode_training_labels,
    resolve_sample_weight,
    validate_embeddings,
    warn_unused_parameters,
)
from ._compat import _fit_context
from ._torch_utils import (
    draw_seed,
    head_threads,
    loading_device,
    resolve_device,
    seeded_torch,
    torch_generator,
)
from ._training import HeadNet, NetAsArraysMixin, TensorBatchIterator, float64_logits
from ._validation import TEXT_PARAMETER_CONSTRAINTS, TRAINING_PARAMETER_CONSTRAINTS


def _total_weight(sample_weight, n_samples):
    return n_samples if sample_weight is None else float(np.sum(sample_weight))


# Inner iterations per L-BFGS step; one skorch epoch is one step. The
# optimiser keeps its curvature history across steps.
_LBFGS_ITERATIONS = 8

# Fused AdamW runs on CPU from torch 2.4 on (on CUDA earlier).
_FUSED_ADAMW = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 4)


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
    def _build_module(self, n_features, n_classes, training_data):
        """The head's :class:`~sklearn_clip._training.HeadModule`;
        ``training_data`` is ``(X, sample_weight)`` in ``fit`` and None when a
        stored estimator is rebuilt.
        """
        raise NotImplementedError

    def _prepare_fit(self, X, y_encoded, sample_weight):
        """Hook run after ``classes_`` is set (text heads embed class names);
        ``sample_weight`` is None or the resolved per-sample weights.
        """

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
            self.classes_, y_encoded = encode_training_labels(self, y)
            self._check_training_parameters(y_encoded)
        weights = self._sample_weights(X, y, sample_weight)
        if not self._continuing():
            self._prepare_fit(X, y_encoded, weights)
        with self._threads():
            if not self._continuing():
                self.net_ = self._initialized_net(
                    _total_weight(weights, len(y)), (X, weights)
                )
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
            self.classes_, _ = encode_labels(
                y if classes is None else np.asarray(classes)
            )
        y_encoded = self._encode_known(y)
        weights = self._sample_weights(X, y, sample_weight)
        if first:
            self._check_training_parameters(y_encoded)
            self._prepare_fit(X, y_encoded, weights)
        with self._threads():
            if first:
                self.net_ = self._initialized_net(
                    _total_weight(weights, len(y)), (X, weights)
                )
            self._train(X, y_encoded, epochs=1, sample_weight=weights)
        return self

    def _sample_weights(self, X, y, sample_weight):
        """Per-sample weights from ``sample_weight`` and ``class_weight``, or
        None when every weight is 1 (the unweighted, faster path).
        """
        return resolve_sample_weight(X, y, sample_weight, self.class_weight)

    def _check_training_parameters(self, y_encoded):
        """Refuse or flag training settings the data makes impossible or moot."""
        if not self.early_stopping:
            warn_unused_parameters(
                self,
                ["validation_fraction", "n_iter_no_change"],
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

    def _initialized_net(self, n_samples, training_data):
        """A new net with its module initialised from ``random_state``
        (torch's global RNG, seeded for just that, one thread at a time);
        training shuffles with the net's own generator, so that concurrent
        fits in threads never share a random stream.
        """
        generator = torch_generator(self.random_state)
        with seeded_torch(self.random_state):
            net = self._new_net(n_samples, training_data, generator=generator)
            net.initialize()
        return net

    def _seed(self):
        return draw_seed(self.random_state)

    def _threads(self):
        """The thread policy of :func:`~sklearn_clip._torch_utils.head_threads`
        on this estimator's device.
        """
        device = self.net_.device if hasattr(self, "net_") else self.device
        return head_threads(resolve_device(device))

    def _new_net(self, n_samples, training_data=None, device=None, generator=None):
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
                (
                    "early_stopping",
                    EarlyStopping(patience=self.n_iter_no_change, load_best=True),
                )
            )
        full = self.batch_size == "full"
        return HeadNet(
            module=self._build_module(
                self.n_features_in_, len(self.classes_), training_data
            ),
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=optimizer,
            lr=lr,
            max_epochs=self.max_epochs,
            batch_size=-1 if full else self.batch_size,
            iterator_train=TensorBatchIterator,
            iterator_valid=TensorBatchIterator,
            iterator_train__shuffle=True,
            iterator_train__generator=generator,
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
            X_tensor = {
                "X": X_tensor,
                "sample_weight": torch.as_tensor(sample_weight, dtype=torch.float32),
            }
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
        net = self._new_net(
            config["n_samples"],
            device=loading_device(self.device),
            generator=torch_generator(self.random_state),  # for warm_start
        )
        net.initialize()
        return net

    # -- prediction -------------------------------------------------------------
    def _logits(self, X):
        with self._threads():
            return float64_logits(self.net_.module_, X, len(self.classes_))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class TextHeadClassifier(TextClassesMixin, EmbeddingHeadClassifier):
    """A trainable head that embeds the class names before training."""

    _parameter_constraints = {
        **EmbeddingHeadClassifier._parameter_constraints,
        **TEXT_PARAMETER_CONSTRAINTS,
    }
    _fitted_attributes = EmbeddingHeadClassifier._fitted_attributes + (
        "text_features_",
        "logit_scale_",
    )
    _rebuilt_buffers = ("text",)

    def _prepare_fit(self, X, y_encoded, sample_weight):
        self._fit_text(X, y_encoded)

    def _text_tensor(self):
        # A copy (the fitted array may be a read-only memory map after
        # joblib.load(mmap_mode="r")), contiguous: L-BFGS views gradients flat.
        return torch.tensor(np.ascontiguousarray(self.text_features_, dtype=np.float32))
