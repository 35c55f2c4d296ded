"""Zero-shot classification of CLIP image embeddings with class-name prompts."""

from sklearn.base import ClassifierMixin

from ._base import BaseCLIPEstimator, ClassifierOutputMixin, TextClassesMixin
from ._compat import _fit_context
from ._validation import TEXT_PARAMETER_CONSTRAINTS


class ZeroShotClassifier(
    TextClassesMixin, ClassifierOutputMixin, ClassifierMixin, BaseCLIPEstimator
):
    """Classify CLIP image embeddings by similarity to class-name prompts.

    ``fit`` learns nothing from the images: it records the classes present in
    ``y`` and embeds their names with CLIP's text encoder (or takes
    ``text_features``). Predictions are the softmax of CLIP's logit scale
    times the cosine similarity between image and class embeddings.

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
        model's learned value (100 when ``text_features`` is given).
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

    _parameter_constraints = dict(TEXT_PARAMETER_CONSTRAINTS)

    def __init__(
        self,
        model="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        *,
        templates="simple",
        class_names=None,
        text_features=None,
        logit_scale=None,
        device="auto",
        precision="auto",
    ):
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
            Image embeddings; only their width is used.
        y : array-like of shape (n_samples,)
            Labels: class names, or any labels with ``class_names`` or
            ``text_features`` given.

        Returns
        -------
        self : ZeroShotClassifier
        """
        self._fit_classes_and_text(X, y)
        return self

    def _logits(self, X):
        return self._zero_shot_logits(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True  # it ignores the training images
        return tags
