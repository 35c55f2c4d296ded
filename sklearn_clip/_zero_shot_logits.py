"""Zero-shot logits as features, for the seed study's "image + logits" probe."""

import numpy as np
from sklearn.base import TransformerMixin, _fit_context
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted

from ._base import BaseCLIPEstimator, TextClassesMixin, validate_embeddings
from ._validation import TEXT_PARAMETER_CONSTRAINTS


class ZeroShotLogits(TextClassesMixin, TransformerMixin, BaseCLIPEstimator):
    """Append CLIP's zero-shot logits to the image embeddings (or replace them).

    With ``make_pipeline(ZeroShotLogits(...), StandardScaler(),
    LogisticRegression())`` this is the seed study's "image + logits" probe;
    ``append=False`` gives its "logits only" variant.

    Parameters
    ----------
    append : bool, default=True
        Output ``[embedding, logits]``; False outputs the logits alone.
    model, pretrained, templates, class_names, text_features, logit_scale, \
device, precision
        Where the class text embeddings come from; see
        :class:`ZeroShotClassifier`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    text_features_ : ndarray of shape (n_classes, n_features)
    logit_scale_ : float
    n_features_in_ : int

    See Also
    --------
    ZeroShotClassifier : Classify with the logits directly.

    References
    ----------
    .. [1] Radford et al., "Learning Transferable Visual Models From Natural
       Language Supervision", ICML 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import ZeroShotLogits
    >>> text = np.eye(2, 4)
    >>> ZeroShotLogits(text_features=text).fit_transform(text, ["a", "b"]).shape
    (2, 6)
    """

    _parameter_constraints = {**TEXT_PARAMETER_CONSTRAINTS, "append": ["boolean"]}

    def __init__(
        self,
        model="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        *,
        append=True,
        templates="simple",
        class_names=None,
        text_features=None,
        logit_scale=None,
        device="auto",
        precision="auto",
    ):
        self.append = append
        self.model = model
        self.pretrained = pretrained
        self.templates = templates
        self.class_names = class_names
        self.text_features = text_features
        self.logit_scale = logit_scale
        self.device = device
        self.precision = precision

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Record the classes of ``y`` and embed their names.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self : ZeroShotLogits
        """
        self._fit_classes_and_text(X, y)
        return self

    def transform(self, X):
        """Zero-shot logits, appended to X unless ``append=False``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        features : ndarray of shape (n_samples, n_features + n_classes)
            Or ``(n_samples, n_classes)`` with ``append=False``.
        """
        check_is_fitted(self)
        X = validate_embeddings(self, X, reset=False)
        logits = self._zero_shot_logits(X)
        return np.hstack([X, logits.astype(X.dtype)]) if self.append else logits

    def get_feature_names_out(self, input_features=None):
        """``x0..`` (or the input names) then ``logit_<class>`` per class."""
        check_is_fitted(self)
        logits = np.array([f"logit_{c}" for c in self.classes_], dtype=object)
        if not self.append:
            return logits
        return np.concatenate([_check_feature_names_in(self, input_features), logits])
