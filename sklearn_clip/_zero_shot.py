"""Zero-shot classification of CLIP image embeddings with class-name prompts."""

from numbers import Real

import numpy as np
from sklearn.base import ClassifierMixin

from ._base import (
    BaseCLIPEstimator,
    ClassifierOutputMixin,
    TextClassesMixin,
    sigmoid_proba_from_logits,
)
from ._compat import StrOptions, _fit_context
from ._text import is_sigmoid_model
from ._validation import TEXT_PARAMETER_CONSTRAINTS
from ._warnings import warn


class ZeroShotClassifier(
    TextClassesMixin, ClassifierOutputMixin, ClassifierMixin, BaseCLIPEstimator
):
    """Classify CLIP image embeddings by similarity to class-name prompts.

    ``fit`` learns nothing from the images: it records the classes present in
    ``y`` and embeds their names with CLIP's text encoder (or takes
    ``text_features``). The logits are CLIP's logit scale times the cosine
    similarity between image and class embeddings, plus the model's learned
    bias for a sigmoid-trained model (SigLIP): the model's own logits.
    ``predict_proba`` is their softmax over the classes, or with
    ``probability="sigmoid"`` SigLIP's independent per-class sigmoids.

    Parameters
    ----------
    model : str, default="ViT-B-32"
        open_clip architecture; must be the model that produced X.
    pretrained : str, path or None, default="laion2b_s34b_b79k"
        open_clip tag or local checkpoint path (see :func:`load_clip`).
    templates : str or list of str, default="simple"
        Prompt templates: ``"simple"``, ``"imagenet"`` (CLIP's 80-prompt
        ensemble; slow on CPU for many classes) or format strings with ``{}``.
    class_names : dict or list, default=None
        Prompt names for labels that are not names themselves: a dict
        ``label -> name`` or a list in sorted-label order. String labels are
        used as names when this is None.
    text_features : array-like of shape (n_classes, n_features), default=None
        Precomputed class text embeddings, rows in sorted-label order. When
        given, no CLIP model is loaded.
    logit_scale : float, default=None
        Temperature multiplying cosine similarities. None uses the CLIP
        model's learned value (100 when ``text_features`` is given, with a
        warning when ``model`` is sigmoid-trained).
    logit_bias : float, default=None
        Added to every logit. None uses the model's learned bias when the
        text comes from the model (SigLIP's; 0 for CLIP), and 0 when
        ``text_features`` is given. Softmax probabilities and predictions do
        not depend on it; sigmoid probabilities do.
    probability : {"softmax", "sigmoid"}, default="softmax"
        What ``predict_proba`` returns. ``"softmax"``: a distribution over
        the classes (rows sum to 1; what scikit-learn's tools expect).
        ``"sigmoid"``: ``sigmoid(logit)`` per class, independently, as a
        sigmoid-trained model (SigLIP) scores each image-text pair: all
        classes may score low ("none of these"), rows need not sum to 1.
        Meant for sigmoid-trained models (``fit`` warns otherwise).
    device : str, default="auto"
        Device for the text encoder (see :func:`load_clip`).
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Text-encoder precision.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted labels seen in ``fit``.
    text_features_ : ndarray of shape (n_classes, n_features), float32
        Unit-norm class embeddings, rows in ``classes_`` order.
    logit_scale_ : float
        The temperature in use.
    logit_bias_ : float
        The bias in use (0 for CLIP).
    n_features_in_ : int
        Embedding width.

    See Also
    --------
    CLIPFeaturizer : Produce the image embeddings.
    encode_class_names : The text side on its own.

    References
    ----------
    .. [1] Radford et al., "Learning Transferable Visual Models From Natural
       Language Supervision", ICML 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import ZeroShotClassifier
    >>> text = np.eye(3, 8, dtype=np.float32)           # three class prototypes
    >>> X = text[[0, 1, 2, 1]] + 0.1                      # images near them
    >>> y = ["cat", "dog", "fox", "dog"]
    >>> clf = ZeroShotClassifier(text_features=text).fit(X, y)
    >>> clf.predict(X).tolist()
    ['cat', 'dog', 'fox', 'dog']
    """

    _parameter_constraints = {
        **TEXT_PARAMETER_CONSTRAINTS,
        "logit_bias": [Real, None],
        "probability": [StrOptions({"softmax", "sigmoid"})],
    }

    def __init__(
        self,
        model="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        *,
        templates="simple",
        class_names=None,
        text_features=None,
        logit_scale=None,
        logit_bias=None,
        probability="softmax",
        device="auto",
        precision="auto",
    ):
        self.model = model
        self.pretrained = pretrained
        self.templates = templates
        self.class_names = class_names
        self.text_features = text_features
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.probability = probability
        self.device = device
        self.precision = precision

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Record the classes of ``y`` and embed their names.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings; only their width is used.
        y : array-like of shape (n_samples,)
            Labels: class names, or any labels with ``class_names`` or
            ``text_features`` given.

        Returns
        -------
        self : ZeroShotClassifier
        """
        self.logit_bias_ = 0.0
        self._fit_classes_and_text(X, y)
        self._fit_logit_bias()
        if (
            self.probability == "sigmoid"
            and self.logit_bias is None
            and not (self.text_features is None and is_sigmoid_model(self.model))
        ):
            warn(
                "ZeroShotClassifier: probability='sigmoid' is meant for "
                f"sigmoid-trained models (SigLIP); {self.model!r} with "
                + (
                    "text_features and no logit_bias"
                    if self.text_features is not None
                    else "a softmax-trained text tower"
                )
                + " gives sigmoid(scale * cosine) with no learned bias, which is "
                "no calibrated probability.",
                UserWarning,
            )
        return self

    def _logits(self, X):
        return self._zero_shot_logits(X)

    def predict_proba(self, X):
        """Class probabilities, columns in ``classes_`` order.

        The softmax of the logits over the classes, or with
        ``probability="sigmoid"`` each class's own ``sigmoid(logit)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        if self.probability == "sigmoid":
            return sigmoid_proba_from_logits(self._checked_logits(X))
        return super().predict_proba(X)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        if self.probability == "sigmoid":
            from scipy.special import log_expit

            return log_expit(np.asarray(self._checked_logits(X), np.float64))
        return super().predict_log_proba(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True  # it ignores the training images
        return tags
