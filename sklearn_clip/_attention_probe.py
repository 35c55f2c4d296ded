"""Attention probe: a linear probe with cross-attention to the class text."""

import math
from numbers import Real

import torch
from torch import nn

from ._base import warn_unused_parameters
from ._compat import Interval
from ._docstrings import CLASS_TEXT, CLIP_MODEL, fill_doc, training_parameters
from ._heads import TextHeadClassifier
from ._training import HeadModule, batch_norm_layer


class AttentionProbeModule(HeadModule):
    """``x = BN1(img)``, ``t = BN2(text)``, ``a = softmax(x t^T / sqrt(C)) t``,
    ``x = (1 - ratio) x + ratio a``, ``logits = Linear(BN3(x))``.
    """

    def __init__(self, text, ratio, pre_bn, post_bn):
        super().__init__()
        n_classes, n_features = text.shape
        self.register_buffer("text", text)
        self.ratio = ratio
        self.image_norm = batch_norm_layer(n_features) if pre_bn else nn.Identity()
        self.text_norm = (
            batch_norm_layer(n_features, sample_weighted=False)
            if pre_bn
            else nn.Identity()
        )
        self.post_norm = batch_norm_layer(n_features) if post_bn else nn.Identity()
        self.linear = nn.Linear(n_features, n_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, X):
        x = self.image_norm(X)
        t = self.text_norm(self.text)
        attention = torch.softmax(x @ t.T / math.sqrt(x.shape[1]), dim=1)
        x = (1 - self.ratio) * x + self.ratio * (attention @ t)
        return self.linear(self.post_norm(x))

    def penalized_weights(self):
        return [self.linear.weight]


@fill_doc(
    clip_model=CLIP_MODEL,
    class_text=CLASS_TEXT,
    training_parameters=training_parameters(
        solver="adamw",
        alpha=0.0,
        lr_doc="6e-3 for AdamW and 1.0 for L-BFGS",
        max_epochs=25,
        batch_size='"full"',
    ),
)
class AttentionProbeClassifier(TextHeadClassifier):
    """Linear probe with a parameter-free cross-attention branch to class text.

    Each image embedding attends over the class text embeddings; the
    attention output is mixed into the embedding by ``ratio`` before a
    BatchNorm + linear classifier (the main idea of the few-shot study it
    comes from; it beats a
    plain probe at every shot count, most at few shots).

    Parameters
    ----------
    %(clip_model)s
    ratio : float, default=0.4
        Weight of the attention branch.
    pre_bn : bool, default=True
        BatchNorm on the image embeddings and on the class text rows before
        attention (the study's "pre BN"; ``batch_norm`` elsewhere).
    post_bn : bool, default=True
        BatchNorm before the linear layer (the study's "post BN").
    %(class_text)s
    %(training_parameters)s

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    text_features_ : ndarray of shape (n_classes, n_features)
    logit_scale_ : float
        Unused by this head's logits (setting ``logit_scale`` warns).
    net_ : skorch.NeuralNetClassifier
    n_features_in_ : int

    See Also
    --------
    LinearProbeClassifier : The same head without the attention branch.
    CLIPAdapterClassifier : Text-based logits, open vocabulary.

    Notes
    -----
    Follows the study's module exactly (BatchNorm on images and on the class
    text rows, scaled dot-product attention, ratio 0.4, BatchNorm + linear).
    Deviates in training: the study uses AdamW (lr 1e-4, batch 32, 400
    epochs) and reports the best epoch on its evaluation split; the defaults
    here are 25 full-batch AdamW steps at lr 6e-3, judged on the last step
    (chosen on held-out training-pool images, ``benchmarks/held_out.py``).
    The linear layer starts at zero.

    References
    ----------
    .. [1] The few-shot study on frozen CLIP ViT-B/32 features of
       FGVC-Aircraft that this package reproduces (section A of the project's
       source notes); attention as in Vaswani et al., "Attention Is All You
       Need", NeurIPS 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import AttentionProbeClassifier
    >>> rng = np.random.default_rng(0)
    >>> text = np.eye(2, 8)
    >>> X = np.vstack([text[0] + 0.1 * rng.normal(size=(10, 8)),
    ...                text[1] + 0.1 * rng.normal(size=(10, 8))])
    >>> y = ["ant"] * 10 + ["bee"] * 10
    >>> clf = AttentionProbeClassifier(text_features=text, random_state=0).fit(X, y)
    >>> clf.score(X, y)
    1.0
    """

    _parameter_constraints = {
        **TextHeadClassifier._parameter_constraints,
        "ratio": [Interval(Real, 0, 1, closed="both")],
        "pre_bn": ["boolean"],
        "post_bn": ["boolean"],
    }

    def __init__(
        self,
        model="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        *,
        ratio=0.4,
        pre_bn=True,
        post_bn=True,
        templates="simple",
        class_names=None,
        text_features=None,
        logit_scale=None,
        precision="auto",
        solver="adamw",
        alpha=0.0,
        class_weight=None,
        lr=None,
        max_epochs=25,
        batch_size="full",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        warm_start=False,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.ratio = ratio
        self.pre_bn = pre_bn
        self.post_bn = post_bn
        self.model = model
        self.pretrained = pretrained
        self.templates = templates
        self.class_names = class_names
        self.text_features = text_features
        self.logit_scale = logit_scale
        self.precision = precision
        self.solver = solver
        self.alpha = alpha
        self.class_weight = class_weight
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    _open_vocabulary = False
    _default_lr = {"lbfgs": 1.0, "adamw": 6e-3}

    def _prepare_fit(self, X, y_encoded, sample_weight):
        warn_unused_parameters(
            self,
            ["logit_scale"],
            "on the attention probe (its linear layer sets the scale of the logits)",
        )
        super()._prepare_fit(X, y_encoded, sample_weight)

    def _build_module(self, n_features, n_classes, training_data):
        return AttentionProbeModule(
            self._text_tensor(), self.ratio, self.pre_bn, self.post_bn
        )
