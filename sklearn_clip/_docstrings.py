"""One text for the parameters that several estimators share.

Docstrings hold markers such as ``%(training_parameters)s`` on a line of
their own; :func:`fill_doc` replaces them, indented like the marker, so that
each shared parameter is described once (as skorch's
``get_neural_net_clf_doc`` does for its nets).
"""

import textwrap

CLIP_MODEL = """\
model : str, default="ViT-B-32"
    open_clip architecture, or ``"hf-hub:ORG/NAME"`` / ``"local-dir:FOLDER"``
    (see :func:`load_clip`). It must be the model that embedded X: class text
    from another model scores at chance level (``fit`` then warns).
pretrained : str, path or None, default="laion2b_s34b_b79k"
    open_clip pretrained tag or local checkpoint path of that model (see
    :func:`load_clip`); None means random weights (tests only)."""

CLASS_TEXT = """\
templates : str or list of str, default="simple"
    Prompt templates: ``"simple"`` (``"a photo of a {}."``), ``"imagenet"``
    (CLIP's 80-prompt ensemble; slow on a CPU for many classes) or format
    strings with ``{}``.
class_names : dict, list or None, default=None
    Prompt names for labels that are not names themselves: a dict
    ``label -> name`` or a list in sorted-label order. String labels are
    their own names when this is None.
text_features : array-like of shape (n_classes, n_features), dict, callable \
or None, default=None
    Class text embeddings instead of encoding names with CLIP: an array with
    rows in sorted-label order; a dict ``label -> embedding``, of which the
    classes in ``y`` are used (so that the estimator fits on folds of
    cross-validation, or MAPIE's, that lack some classes, as scikit-learn's
    estimators do); or a callable ``f(classes, n_features)`` returning the
    rows of ``classes`` (a text encoder of your own). No CLIP is loaded then, and
    ``templates``, ``class_names`` and ``precision`` have no effect (setting
    them warns).
logit_scale : float or None, default=None
    Temperature multiplying cosine similarities; None uses the CLIP model's
    learned value (SigLIP's too), or 100 when ``text_features`` is given
    (which warns when ``model`` is sigmoid-trained: pass its scale).
precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
    Text-encoder precision: bfloat16 on CUDA and float32 on the CPU for
    ``"auto"``."""

_TRAINING = """\
solver : {{"lbfgs", "adamw"}}, default="{solver}"
    Optimiser: full-batch L-BFGS with a strong-Wolfe line search (8
    iterations per epoch), or AdamW with torch's default decoupled weight
    decay.
alpha : float, default={alpha}
    {alpha_doc}
class_weight : dict, "balanced" or None, default=None
    Weights of the classes in the loss, as in scikit-learn: a dict
    ``label -> weight`` or ``"balanced"`` (inversely proportional to the
    class frequencies); multiplied by ``fit``'s ``sample_weight``.{class_weight_doc}
lr : float or None, default=None
    Learning rate; None means {lr_doc}.
max_epochs : int, default={max_epochs}
    Training epochs (for L-BFGS, one epoch is one step of 8 iterations).
batch_size : int or "full", default={batch_size}
    Mini-batch size; ``"full"`` trains on all samples at once. A last
    mini-batch of a single row joins the one before it.
early_stopping : bool, default=False
    Hold out ``validation_fraction`` of the training data (stratified,
    seeded) and stop when its loss stops improving, keeping the best
    weights. Off by default: few-shot data is too scarce to hold out.
validation_fraction : float, default=0.1
    Held-out fraction when ``early_stopping=True``.
n_iter_no_change : int, default=5
    Patience of early stopping, in epochs.
warm_start : bool, default=False
    Continue from the current weights when ``fit`` is called again.
device : str, default="auto"
    Training device; ``"auto"`` is CUDA when available, else the CPU.
random_state : int, RandomState instance or None, default=None
    Seeds weight initialisation, shuffling and the validation split, without
    touching the global random state.
verbose : int, default=0
    Print skorch's per-epoch table when positive."""

L2_PENALTY = (
    "L2 penalty on the head's weights, on the scale of scikit-learn's "
    "``1 / C``: ``alpha / 2 * ||W||^2`` added to the summed loss."
)


def training_parameters(
    *,
    solver,
    alpha,
    lr_doc,
    max_epochs,
    batch_size,
    alpha_doc=L2_PENALTY,
    class_weight_doc="",
):
    """The training parameters of a skorch-trained head, with its defaults."""
    return _TRAINING.format(
        solver=solver,
        alpha=alpha,
        alpha_doc="\n    ".join(textwrap.wrap(alpha_doc, 72)),
        lr_doc=lr_doc,
        max_epochs=max_epochs,
        batch_size=batch_size,
        class_weight_doc=class_weight_doc,
    )


def fill_doc(**sections):
    """Class decorator: replace ``%(name)s`` marker lines in the docstring."""

    def decorate(cls):
        doc = cls.__doc__
        if doc is None:  # python -OO drops docstrings
            return cls
        for name, text in sections.items():
            marker = f"%({name})s"
            for line in doc.splitlines():
                if line.strip() == marker:
                    indent = line[: len(line) - len(line.lstrip())]
                    doc = doc.replace(line, textwrap.indent(text, indent))
                    break
            else:
                raise ValueError(f"{cls.__name__}'s docstring has no {marker} line")
        cls.__doc__ = doc
        return cls

    return decorate
