"""One call for a pipeline whose featurizer and head use the same CLIP model."""

from sklearn.base import clone
from sklearn.pipeline import Pipeline

from ._featurizer import CLIPFeaturizer


def make_clip_pipeline(
    head,
    *,
    model="ViT-B-32",
    pretrained="laion2b_s34b_b79k",
    preprocess=None,
    memory=None,
    verbose=False,
    **featurizer_params,
):
    """Build ``Pipeline([("clip", CLIPFeaturizer(...)), ("head", head)])``
    with the featurizer and the head on the same CLIP model.

    A head that embeds class text (zero-shot, Tip-Adapter, GDA with text,
    ...) must use the CLIP model that embedded the images; this sets
    ``model`` and ``pretrained`` on both, so they cannot differ.

    Parameters
    ----------
    head : estimator
        Any classifier on embeddings: one of the package's, or a scikit-learn
        estimator or pipeline. It is cloned; where it has ``model`` and
        ``pretrained`` parameters, the clone gets the values below.
    model : str, default="ViT-B-32"
        open_clip architecture, for the featurizer and the head.
    pretrained : str, path or None, default="laion2b_s34b_b79k"
        open_clip tag or local checkpoint path, for both.
    preprocess : None, str or dict, default=None
        The featurizer's image preprocessing (see :class:`CLIPFeaturizer`);
        None is the weights' own.
    memory : str or joblib.Memory, default=None
        Passed to :class:`~sklearn.pipeline.Pipeline`. The featurizer's own
        ``cache_dir`` is usually the better cache: it covers test folds too.
    verbose : bool, default=False
        Passed to :class:`~sklearn.pipeline.Pipeline`.
    **featurizer_params
        Further :class:`CLIPFeaturizer` parameters (``device``,
        ``cache_dir``, ``batch_size``, ...).

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Steps ``"clip"`` and ``"head"``, so a grid over the head reads
        ``{"head__ratio": [...]}``.

    Examples
    --------
    >>> from sklearn_clip import TipAdapterClassifier, make_clip_pipeline
    >>> pipe = make_clip_pipeline(TipAdapterClassifier(), model="sklearn-clip-tiny",
    ...                           pretrained=None, device="cpu")
    >>> pipe.named_steps["head"].model
    'sklearn-clip-tiny'
    """
    if not hasattr(head, "fit"):
        raise TypeError(f"head must be an estimator with fit, got {head!r}")
    if type(head).__name__ == "VisualPromptClassifier":
        raise ValueError(
            "VisualPromptClassifier takes images, not embeddings: use it on its "
            "own, without a featurizer in front."
        )
    head = clone(head)
    shared = {"model": model, "pretrained": pretrained}
    params = head.get_params(deep=False) if hasattr(head, "get_params") else {}
    if shared.keys() <= params.keys():
        head.set_params(**shared)
    featurizer = CLIPFeaturizer(
        model, pretrained, preprocess=preprocess, **featurizer_params
    )
    return Pipeline(
        [("clip", featurizer), ("head", head)], memory=memory, verbose=verbose
    )
