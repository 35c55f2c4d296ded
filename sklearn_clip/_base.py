"""Machinery shared by the classifiers: labels, class text embeddings, logits."""

import contextlib
import contextvars
import copy
import inspect

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator
from sklearn.exceptions import InconsistentVersionWarning as _SklearnVersionWarning
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from ._compat import _check_sample_weight
from ._text import encode_class_names, is_sigmoid_model, logit_bias_of, logit_scale_of
from ._validation import check_text_features
from ._version import __version__
from ._warnings import warn

#: exp(logit_scale) of trained CLIP models (OpenAI and LAION clamp it at 100);
#: used when text embeddings are given and no model is loaded.
DEFAULT_LOGIT_SCALE = 100.0


class InconsistentVersionWarning(_SklearnVersionWarning):
    """A pickled estimator comes from another sklearn-clip version.

    A subclass of scikit-learn's warning of the same name, so that one filter
    handles both.

    Parameters
    ----------
    estimator_name : str
        Class name of the unpickled estimator.
    current_sklearn_version : str
        The installed sklearn-clip version (scikit-learn's parameter name).
    original_sklearn_version : str
        The sklearn-clip version that wrote the pickle.
    """

    def __str__(self):
        return (
            f"Trying to unpickle {self.estimator_name} from sklearn-clip "
            f"{self.original_sklearn_version} when using sklearn-clip "
            f"{self.current_sklearn_version}. This might lead to breaking code or "
            "invalid results; refit the estimator with this version."
        )


class CLIPModelMismatchWarning(UserWarning):
    """The class text scores the training embeddings at chance level: the
    embeddings and the text probably come from different CLIP models.
    """


class BaseCLIPEstimator(BaseEstimator):
    """``BaseEstimator`` whose pickles record the sklearn-clip version.

    Loading a pickle from another version warns
    (:class:`InconsistentVersionWarning`); a fitted pickle that lacks an
    attribute this version needs fails at load time with an error naming the
    version it came from, instead of later inside ``predict``.
    """

    #: Attributes every fitted instance has; see ``_required_attributes``.
    _fitted_attributes = ()

    def _required_attributes(self):
        return self._fitted_attributes

    def __getstate__(self):
        return dict(super().__getstate__(), _sklearn_clip_version=__version__)

    def _after_load(self):
        """Hook: rebuild fitted state stored in a plain form (skorch nets)."""

    def __setstate__(self, state):
        version = state.pop("_sklearn_clip_version", "unknown (before 0.1.0)")
        if version != __version__:
            warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    current_sklearn_version=__version__,
                    original_sklearn_version=version,
                )
            )
        # A parameter added after the pickle was written takes its default,
        # which keeps the behaviour the estimator was fitted with.
        for name, parameter in inspect.signature(
            type(self).__init__
        ).parameters.items():
            if name != "self" and parameter.default is not inspect.Parameter.empty:
                state.setdefault(name, parameter.default)
        super().__setstate__(state)
        self._after_load()
        fitted = any(k.endswith("_") and not k.startswith("_") for k in self.__dict__)
        missing = [a for a in self._required_attributes() if a not in self.__dict__]
        if fitted and missing:
            raise ValueError(
                f"This pickled {type(self).__name__} comes from sklearn-clip {version} "
                f"and lacks {', '.join(missing)}, which sklearn-clip {__version__} "
                "needs: refit it with this version, or load it with the version "
                "that saved it."
            )


def warn_unused_parameters(estimator, names, reason):
    """Warn about parameters set away from their defaults that ``reason``
    makes ineffective (a parameter a user set never goes silently unused).
    """
    defaults = inspect.signature(type(estimator).__init__).parameters
    unused = [
        name
        for name in names
        if _differs(getattr(estimator, name), defaults[name].default)
    ]
    if unused:
        warn(
            f"{type(estimator).__name__}: {', '.join(unused)} "
            f"{'has' if len(unused) == 1 else 'have'} no effect {reason}.",
            UserWarning,
        )


def _differs(value, default):
    if value is default:
        return False
    if default is None or value is None:
        return True
    try:
        return bool(np.all(value != default)) if np.ndim(value) == 0 else True
    except (TypeError, ValueError):
        return True


def encode_labels(y):
    """Return ``(classes, y_encoded)`` for any discrete labels.

    Classes are sorted as :func:`numpy.unique` sorts them, which is the order
    of ``classes_`` and of ``predict_proba`` columns everywhere.
    """
    y = np.asarray(y)
    if y.dtype == object:
        _check_one_label_kind(y)
    # scikit-learn's check_classification_targets without its warning that
    # many classes "could represent a regression": one sample per class is
    # the normal 1-shot case. (Silencing it with warnings.catch_warnings
    # would change the process's filters under joblib threads.)
    kind = type_of_target(y, input_name="y")
    if kind not in ("binary", "multiclass"):
        raise ValueError(
            f"Unknown label type: {kind}. Maybe you are trying to fit a "
            "classifier, which expects discrete classes on a regression target "
            "with continuous values; the classifiers here take one label per "
            "sample."
        )
    try:
        classes, encoded = np.unique(y, return_inverse=True)
    except TypeError as exc:
        raise ValueError(
            f"Labels must be of one comparable type (all str or all int): {exc}"
        ) from None
    return classes, encoded.reshape(-1)


def encode_training_labels(estimator, y):
    """:func:`encode_labels` for a learner that needs at least two classes;
    one class raises a ``ValueError`` naming ``estimator``.
    """
    classes, encoded = encode_labels(y)
    if len(classes) < 2:
        raise ValueError(
            f"{type(estimator).__name__} needs samples of at least 2 classes; "
            f"got 1 class: {classes.tolist()}"
        )
    return classes, encoded


def _check_one_label_kind(y):
    """Refuse object arrays mixing strings and numbers, which cannot be sorted
    (numpy and scikit-learn fail on them with unrelated messages).
    """
    kinds = {
        "str"
        if isinstance(v, str)
        else "int"
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
        else type(v).__name__
        for v in y.ravel()
    }
    if len(kinds) > 1:
        raise ValueError(
            "Labels must be of one type (all str or all int); y mixes "
            f"{', '.join(sorted(kinds))}. Convert them first, for example "
            "y = np.asarray(y, dtype=str)."
        )


#: True while a meta-estimator fits members on class text it has already
#: checked against the images (each thread and process has its own value).
_TEXT_CHECKED = contextvars.ContextVar("sklearn_clip_text_checked", default=False)


@contextlib.contextmanager
def text_already_checked():
    """Within this block, heads skip the chance-level check of their class
    text (:class:`CLIPModelMismatchWarning`): the caller made it once.
    Thread-safe, unlike a warnings filter.
    """
    token = _TEXT_CHECKED.set(True)
    try:
        yield
    finally:
        _TEXT_CHECKED.reset(token)


def validate_embeddings(estimator, X, y="no_validation", *, reset):
    """``validate_data`` for float embedding matrices (float32 kept as is).

    In ``fit`` pass ``y`` (None raises the standard "requires y" error); at
    prediction time leave it out.
    """
    return validate_data(estimator, X, y, dtype=[np.float32, np.float64], reset=reset)


def resolve_sample_weight(X, y, sample_weight, class_weight):
    """float64 per-sample weights from ``sample_weight`` times the weights of
    ``class_weight`` (None, ``"balanced"`` or a dict label -> weight), or
    None when both are None (every weight 1: the unweighted path).
    """
    if sample_weight is None and class_weight is None:
        return None
    weights = _check_sample_weight(
        sample_weight, X, dtype=np.float64, ensure_non_negative=True
    )
    if class_weight is not None:
        weights = weights * compute_sample_weight(class_weight, y)
    if not weights.sum() > 0:
        raise ValueError(
            "sample_weight (times class_weight) sums to zero: nothing to fit."
        )
    return weights


def decision_from_logits(logits):
    """scikit-learn's ``decision_function`` shape: for two classes, the score
    of ``classes_[1]``; otherwise the logits.
    """
    if logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    return logits


def proba_from_logits(logits):
    """Softmax probabilities (float64), columns in ``classes_`` order."""
    return softmax(np.asarray(logits, dtype=np.float64), axis=1)


def sigmoid_proba_from_logits(logits):
    """Independent per-class probabilities ``sigmoid(logit)`` (float64), as
    a sigmoid-trained model (SigLIP) scores each image-text pair; rows need
    not sum to 1.
    """
    from scipy.special import expit

    return expit(np.asarray(logits, dtype=np.float64))


def log_proba_from_logits(logits):
    """``log(proba_from_logits)``, ``-inf`` where a probability underflows
    to 0 (as scikit-learn's classifiers give it).
    """
    with np.errstate(divide="ignore"):
        return np.log(proba_from_logits(logits))


def l2_normalize(X):
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, np.finfo(X.dtype).tiny)


class ClassifierOutputMixin:
    """``predict``/``predict_proba``/``predict_log_proba``/``decision_function``
    from one hook.

    Subclasses implement ``_logits(X) -> (n_samples, n_classes)`` on
    validated embeddings; an estimator whose inputs are not embeddings
    overrides ``_checked_logits(X, **params)`` instead, and the four methods
    pass it their keyword arguments (``VisualPromptClassifier``:
    ``use_prompt``). Everything else maps columns back to ``classes_``.
    """

    def decision_function(self, X, **params):
        """Class scores (logits); for two classes, the score of ``classes_[1]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        **params : dict
            Options of the estimator's scoring, if it has any
            (:class:`VisualPromptClassifier`: ``use_prompt``).

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
        """
        return decision_from_logits(self._checked_logits(X, **params))

    def predict_proba(self, X, **params):
        """Class probabilities, columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        **params : dict
            Options of the estimator's scoring, if it has any
            (:class:`VisualPromptClassifier`: ``use_prompt``).

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return proba_from_logits(self._checked_logits(X, **params))

    def predict_log_proba(self, X, **params):
        """Logarithm of :meth:`predict_proba` (``-inf`` where a probability
        underflows to 0, as scikit-learn's classifiers give it).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        **params : dict
            Options of the estimator's scoring, if it has any
            (:class:`VisualPromptClassifier`: ``use_prompt``).

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        return log_proba_from_logits(self._checked_logits(X, **params))

    def predict(self, X, **params):
        """Predicted labels (elements of ``classes_``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        **params : dict
            Options of the estimator's scoring, if it has any
            (:class:`VisualPromptClassifier`: ``use_prompt``).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        # Checks that it is fitted before classes_ is read.
        logits = self._checked_logits(X, **params)
        return self.classes_[np.argmax(logits, axis=1)]

    def _checked_logits(self, X, **params):
        if params:
            raise TypeError(
                f"{type(self).__name__}'s prediction methods take no options; got "
                f"{sorted(params)}."
            )
        check_is_fitted(self)
        X = validate_embeddings(self, X, reset=False)
        return np.asarray(self._logits(X))


class TextClassesMixin:
    """Class text embeddings for heads whose logits use the class names.

    Expects the parameters ``model``, ``pretrained``, ``device``,
    ``precision``, ``templates``, ``class_names``, ``text_features`` and
    ``logit_scale``.
    """

    _fitted_attributes = (
        "classes_",
        "n_features_in_",
        "text_features_",
        "logit_scale_",
    )

    # False for heads with one learned output per training class: they use
    # the class text to train but cannot score classes they were not fit on.
    _open_vocabulary = True

    def _prompt_names(self, classes, class_names):
        if class_names is None:
            if classes.dtype.kind not in "UO" or not all(
                isinstance(c, str) for c in classes
            ):
                raise ValueError(
                    f"{type(self).__name__} builds its classifier from class names, "
                    f"but the labels are not strings (classes: {classes[:5].tolist()}"
                    f"{' ...' if len(classes) > 5 else ''}). Pass class_names (a dict "
                    "label -> name, or a list in sorted-label order) or "
                    "text_features."
                )
            return [str(c) for c in classes]
        if isinstance(class_names, dict):
            missing = [c for c in classes.tolist() if c not in class_names]
            if missing:
                raise ValueError(f"class_names has no entry for labels {missing}.")
            return [str(class_names[c]) for c in classes.tolist()]
        if len(class_names) != len(classes):
            raise ValueError(
                f"class_names has {len(class_names)} entries but y has "
                f"{len(classes)} classes; give one name per class in sorted-label "
                "order, or a dict label -> name (which also serves folds of "
                "cross-validation that lack some classes)."
            )
        return [str(name) for name in class_names]

    def _class_text(self, classes, n_features, class_names, text_features):
        """Return ``(text_features, logit_scale)`` for ``classes``."""
        if callable(text_features):
            text_features = text_features(classes, n_features)
        if text_features is not None:
            text = check_text_features(text_features, classes, n_features)
            if self.logit_scale is None and is_sigmoid_model(self.model):
                warn(
                    f"{type(self).__name__}: text_features is given without "
                    f"logit_scale, so CLIP's {DEFAULT_LOGIT_SCALE:g} is assumed; "
                    f"but {self.model!r} is sigmoid-trained (SigLIP) with a "
                    "learned scale and bias of its own. Pass logit_scale= (and "
                    "logit_bias= where the estimator has it), e.g. from "
                    "load_clip(...).model.logit_scale.exp() and .logit_bias.",
                    UserWarning,
                )
            scale = self.logit_scale or DEFAULT_LOGIT_SCALE
            return text, float(scale)
        names = self._prompt_names(classes, class_names)
        text = encode_class_names(
            names,
            self.templates,
            model=self.model,
            pretrained=self.pretrained,
            device=self.device,
            precision=self.precision,
        )
        if text.shape[1] != n_features:
            raise ValueError(
                f"X has {n_features} features but CLIP model {self.model!r} "
                f"embeds text in {text.shape[1]} dimensions: were X's embeddings "
                "made with another model?"
            )
        scale = self.logit_scale or logit_scale_of(
            self.model, self.pretrained, self.device
        )
        return text, float(scale)

    def _fit_classes_and_text(self, X, y):
        """``fit`` of the text-only estimators: check, record classes, embed names."""
        X, y = validate_embeddings(self, X, y, reset=True)
        self.classes_, y_encoded = encode_labels(y)
        self._fit_text(X, y_encoded)

    def _zero_shot_logits(self, X):
        # float64: a row's logits do not depend on the rows scored with it.
        X = l2_normalize(np.asarray(X, dtype=np.float64))
        logits = self.logit_scale_ * X @ np.asarray(self.text_features_, np.float64).T
        # A sigmoid-trained model's (SigLIP) logits include its learned bias;
        # pickles from before the bias was recorded have none.
        return logits + getattr(self, "logit_bias_", 0.0)

    def _fit_logit_bias(self):
        """``logit_bias_``: the ``logit_bias`` parameter where the estimator
        has one, else the model's learned bias when the text comes from the
        model (0 for CLIP), else 0.
        """
        given = getattr(self, "logit_bias", None)
        if given is not None:
            self.logit_bias_ = float(given)
        elif self.text_features is None:
            self.logit_bias_ = logit_bias_of(self.model, self.pretrained, self.device)
        else:
            self.logit_bias_ = 0.0

    def _fit_text(self, X, y_encoded):
        """Embed the names of ``classes_`` and check them against ``X``."""
        if self.text_features is not None:
            warn_unused_parameters(
                self,
                ["templates", "class_names", "precision"],
                "when text_features is given (no text is encoded)",
            )
        self.text_features_, self.logit_scale_ = self._class_text(
            self.classes_, self.n_features_in_, self.class_names, self.text_features
        )
        self._warn_if_text_mismatch(X, y_encoded)

    def _warn_if_text_mismatch(self, X, y_encoded):
        """Warn when the class text classifies the training embeddings no
        better than chance: X was then almost surely embedded by another CLIP
        model than the text (same width, unrelated spaces).
        """
        n_classes = len(self.classes_)
        if _TEXT_CHECKED.get():
            return  # checked once by the meta-estimator fitting this one
        if len(y_encoded) < 2 * n_classes:
            return  # too few samples to tell
        if self.text_features is None and self.pretrained is None:
            return  # random weights: already warned, nothing to match
        accuracy = np.mean(self._zero_shot_logits(X).argmax(axis=1) == y_encoded)
        chance = 1 / n_classes
        # Near chance: under twice chance, and within three binomial standard
        # errors of it once there are enough samples to tell (binary tasks
        # where real zero-shot scores 60-70 % do not warn on large sets).
        noise = 3 * np.sqrt(chance * (1 - chance) / len(y_encoded))
        if accuracy < min(2 * chance, chance + 0.25, chance + noise):
            source = (
                "text_features"
                if self.text_features is not None
                else f"model={self.model!r}, pretrained={self.pretrained!r}"
            )
            warn(
                f"{type(self).__name__}: the class text scores the training "
                f"embeddings at chance level (zero-shot accuracy {accuracy:.1%}, "
                f"chance {chance:.1%}). Either X was embedded by another CLIP "
                f"model than the class text ({source}): embed X with the same "
                "model and weights, e.g. with make_clip_pipeline(head, model=..., "
                "pretrained=...); or the class names do not describe these "
                "images to CLIP (a hard domain, codes instead of names): "
                "class_names={label: name} may help, and methods that learn "
                "from the images (LinearProbeClassifier, GDAClassifier) need "
                "no text.",
                CLIPModelMismatchWarning,
            )

    def _check_open_vocabulary(self):
        if not self._open_vocabulary:
            raise AttributeError(
                f"{type(self).__name__} learns one output per training class and "
                "cannot predict over new classes; for open vocabulary use "
                "ZeroShotClassifier, CLIPAdapterClassifier, TipAdapterClassifier "
                "or VisualPromptClassifier."
            )
        return True

    # A lambda, so that a subclass's own _check_open_vocabulary is the one
    # that decides (available_if keeps the function it is given).
    @available_if(lambda estimator: estimator._check_open_vocabulary())
    def with_classes(self, classes, *, class_names=None, text_features=None):
        """Return a copy of this fitted classifier that predicts over new classes.

        Only for classifiers built from class text embeddings (open
        vocabulary; :class:`CLIPClassifier` when every method it chose is):
        the learned part is class-agnostic, and the new classes get text
        embeddings from their names (or ``text_features``).

        Parameters
        ----------
        classes : sequence
            The new labels; strings are used as class names in prompts.
        class_names : dict or list, default=None
            Prompt names for non-string labels, as in the constructor.
        text_features : array-like of shape (n_classes, n_features), default=None
            Precomputed text embeddings, rows in sorted-label order.

        Returns
        -------
        estimator : same type
            A fitted copy whose ``classes_`` are the sorted new labels.

        Examples
        --------
        >>> wider = clf.with_classes(["cat", "dog", "fox"])  # doctest: +SKIP
        >>> wider.predict(X)  # doctest: +SKIP
        """
        check_is_fitted(self)
        classes, _ = encode_labels(np.asarray(classes))
        new = copy.deepcopy(self)
        new.classes_ = classes
        # The temperature stays the fitted one; only the class rows change.
        new.text_features_, _ = self._class_text(
            classes, self.text_features_.shape[1], class_names, text_features
        )
        new._on_classes_changed(self)
        return new

    def _on_classes_changed(self, previous):
        """Hook for estimators holding state derived from the class set;
        called on the copy, whose ``classes_`` and ``text_features_`` are
        already new (``previous`` is the estimator it was copied from).
        """
