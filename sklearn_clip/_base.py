"""Machinery shared by the classifiers: labels, class text embeddings, logits."""

import copy
import warnings

import numpy as np
from scipy.special import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._text import encode_class_names, logit_scale_of
from ._validation import check_text_features

#: exp(logit_scale) of trained CLIP models (OpenAI and LAION clamp it at 100);
#: used when text embeddings are given and no model is loaded.
DEFAULT_LOGIT_SCALE = 100.0


def encode_labels(y):
    """Return ``(classes, y_encoded)`` for any discrete labels.

    Classes are sorted as :func:`numpy.unique` sorts them, which is the order
    of ``classes_`` and of ``predict_proba`` columns everywhere.
    """
    with warnings.catch_warnings():
        # One sample per class is the normal 1-shot case, not a regression target.
        warnings.filterwarnings("ignore", message=".*could represent a regression")
        check_classification_targets(y)
    try:
        classes, encoded = np.unique(y, return_inverse=True)
    except TypeError as exc:
        raise ValueError(
            f"Labels must be of one comparable type (all str or all int): {exc}"
        ) from None
    return classes, encoded.reshape(-1)


def validate_embeddings(estimator, X, y="no_validation", *, reset):
    """``validate_data`` for float embedding matrices (float32 kept as is).

    In ``fit`` pass ``y`` (None raises the standard "requires y" error); at
    prediction time leave it out.
    """
    return validate_data(
        estimator, X, y, dtype=[np.float32, np.float64], reset=reset
    )


def decision_from_logits(logits):
    """scikit-learn's ``decision_function`` shape: for two classes, the score
    of ``classes_[1]``; otherwise the logits."""
    if logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    return logits


def l2_normalize(X):
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, np.finfo(X.dtype).tiny)


class ClassifierOutputMixin:
    """``predict``/``predict_proba``/``decision_function`` from ``_logits``.

    Subclasses implement ``_logits(X) -> (n_samples, n_classes)`` on validated
    input; everything else maps columns back to ``classes_``.
    """

    def decision_function(self, X):
        """Class scores (logits); for two classes, the score of ``classes_[1]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
        """
        return decision_from_logits(self._checked_logits(X))

    def predict_proba(self, X):
        """Class probabilities, columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return softmax(self._checked_logits(X).astype(np.float64), axis=1)

    def predict(self, X):
        """Predicted labels (elements of ``classes_``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        logits = self._checked_logits(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(logits, axis=1)]

    def _checked_logits(self, X):
        check_is_fitted(self)
        X = validate_embeddings(self, X, reset=False)
        return np.asarray(self._logits(X))


class TextClassesMixin:
    """Class text embeddings for heads whose logits use the class names.

    Expects the parameters ``model``, ``pretrained``, ``device``,
    ``precision``, ``templates``, ``class_names``, ``text_features`` and
    ``logit_scale``.
    """

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
                "order, or a dict label -> name."
            )
        return [str(name) for name in class_names]

    def _class_text(self, classes, n_features, class_names, text_features):
        """Return ``(text_features, logit_scale)`` for ``classes``."""
        if text_features is not None:
            text = check_text_features(text_features, len(classes), n_features)
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
        """``fit`` of the text-only estimators: validate, record classes, embed names."""
        X, y = validate_embeddings(self, X, y, reset=True)
        self.classes_, _ = encode_labels(y)
        self._fit_text(self.classes_)

    def _zero_shot_logits(self, X):
        return self.logit_scale_ * l2_normalize(X) @ self.text_features_.T

    def _fit_text(self, classes):
        self.text_features_, self.logit_scale_ = self._class_text(
            classes, self.n_features_in_, self.class_names, self.text_features
        )

    def with_classes(self, classes, *, class_names=None, text_features=None):
        """Return a copy of this fitted classifier that predicts over new classes.

        Only for heads whose classifier is built from class text embeddings
        (open vocabulary): the learned part is class-agnostic, and the new
        classes get text embeddings from their names (or ``text_features``).

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
        if not self._open_vocabulary:
            raise AttributeError(
                f"{type(self).__name__} learns one output per training class and "
                "cannot predict over new classes; for open vocabulary use "
                "ZeroShotClassifier, CLIPAdapterClassifier, TipAdapterClassifier "
                "or VisualPromptClassifier."
            )
        check_is_fitted(self)
        classes, _ = encode_labels(np.asarray(classes))
        new = copy.deepcopy(self)
        new.classes_ = classes
        # The temperature stays the fitted one; only the class rows change.
        new.text_features_, _ = self._class_text(
            classes, self.text_features_.shape[1], class_names, text_features
        )
        new._on_classes_changed()
        return new

    def _on_classes_changed(self):
        """Hook for heads holding state derived from the class set; called on
        the copy, whose ``classes_`` and ``text_features_`` are already new."""
