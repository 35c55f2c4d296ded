"""Zero-shot logits as features, for the "image + logits" probe."""

from numbers import Real

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._base import BaseCLIPEstimator, TextClassesMixin, validate_embeddings
from ._compat import _check_feature_names_in, _fit_context
from ._docstrings import CLASS_TEXT, CLIP_MODEL, fill_doc
from ._validation import TEXT_PARAMETER_CONSTRAINTS


@fill_doc(clip_model=CLIP_MODEL, class_text=CLASS_TEXT)
class ZeroShotLogits(TextClassesMixin, TransformerMixin, BaseCLIPEstimator):
    """Append CLIP's zero-shot logits to the image embeddings (or replace them).

    With ``make_pipeline(ZeroShotLogits(...), StandardScaler(),
    LogisticRegression())`` this is the "image + logits" probe of the few-shot
    adapter study the package reproduces;
    ``append=False`` gives its "logits only" variant.

    Parameters
    ----------
    %(clip_model)s
    append : bool, default=True
        Output ``[embedding, logits]``; False outputs the logits alone.
    %(class_text)s
    logit_bias : float, default=None
        Added to every logit. None uses the model's learned bias when the
        text comes from the model (SigLIP's; 0 for CLIP), and 0 when
        ``text_features`` is given.
    device : str, default="auto"
        Device of the text encoder; ``"auto"`` is CUDA when available.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    text_features_ : ndarray of shape (n_classes, n_features)
    logit_scale_ : float
    logit_bias_ : float
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

    _parameter_constraints = {
        **TEXT_PARAMETER_CONSTRAINTS,
        "append": ["boolean"],
        "logit_bias": [Real, None],
    }

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
        precision="auto",
        logit_bias=None,
        device="auto",
    ):
        self.append = append
        self.model = model
        self.pretrained = pretrained
        self.templates = templates
        self.class_names = class_names
        self.text_features = text_features
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
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
        self.logit_bias_ = 0.0
        self._fit_classes_and_text(X, y)
        self._fit_logit_bias()
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
        logits = logits.astype(X.dtype)  # computed in float64, returned as X's
        return np.hstack([X, logits]) if self.append else logits

    def get_feature_names_out(self, input_features=None):
        """Names of the output features.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Names of the input features; ``x0``, ``x1``, ... when None.

        Returns
        -------
        ndarray of str
            The input names (unless ``append=False``), then ``logit_<class>``
            per class.
        """
        check_is_fitted(self)
        logits = np.array([f"logit_{c}" for c in self.classes_], dtype=object)
        if not self.append:
            return logits
        return np.concatenate([_check_feature_names_in(self, input_features), logits])
