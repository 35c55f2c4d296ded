"""ONNX export: skl2onnx converters for the package's estimators, the CLIP
image tower as an ONNX graph, and one file from pixels to probabilities.

The converters are registered through skl2onnx's own mechanism
(``update_registered_converter``), so ``skl2onnx.to_onnx(fitted, X[:1])``
works on every classifier of the package and on Pipelines mixing them with
scikit-learn steps. Each head's graph is written from its fitted arrays (no
torch exporter: Tip-Adapter's module, for one, exports with neither), and it
scores in float64 as the estimators do: the input is cast to double, and the
probabilities are cast back to the input's type at the end.
"""

import json
import os

import numpy as np

from ._onnx_runtime import META_CLASSES, META_INPUT, META_PREPROCESS, META_VERSION
from ._version import __version__
from ._warnings import warn

#: The lowest opset the converters write (ReduceSum takes its axes as an
#: input from 13 on; the norms use ReduceSum, never ReduceL2, whose axes
#: moved from attribute to input at 18 and reduce over everything when left
#: out).
MIN_OPSET = 13

_registered = False


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import skl2onnx  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"ONNX export needs onnx and skl2onnx ({exc}); install them with "
            "pip install 'sklearn-clip[onnx]'."
        ) from None


# -- graph pieces (skl2onnx's algebra) ----------------------------------------------


class _Graph:
    """Builds float64 expressions with one opset."""

    def __init__(self, opset, scope=None):
        from skl2onnx.algebra import onnx_ops

        self.ops = onnx_ops
        self.opset = opset
        self.scope = scope

    def __getattr__(self, name):
        op = getattr(self.ops, f"Onnx{name}")

        def build(*inputs, **attributes):
            return op(*inputs, op_version=self.opset, **attributes)

        return build

    @staticmethod
    def const(array):
        return np.ascontiguousarray(np.asarray(array, dtype=np.float64))

    def matmul_t(self, x, matrix):
        """``x @ matrix.T`` with a constant matrix."""
        return self.MatMul(x, self.const(np.asarray(matrix, dtype=np.float64).T))

    def affine(self, x, coef, intercept=None):
        out = self.matmul_t(x, coef)
        return out if intercept is None else self.Add(out, self.const(intercept))

    def row_norm(self, x):
        axes = np.array([1], dtype=np.int64)
        return self.Sqrt(self.ReduceSum(self.Mul(x, x), axes, keepdims=1))

    def normalize(self, x, eps=1e-12):
        """``x / max(||x||, eps)`` per row (torch's ``F.normalize``)."""
        return self.Div(x, self.Max(self.row_norm(x), self.const([eps])))

    def scale(self, x, factor):
        return self.Mul(x, self.const([float(factor)]))

    def log_proba(self, proba, floor):
        return self.Max(self.Log(proba), self.const([float(floor)]))


def _batch_norm(module):
    """``(scale, shift)`` of an eval-mode BatchNorm (None for Identity)."""
    if not hasattr(module, "running_mean"):
        return None
    mean = module.running_mean.detach().double().cpu().numpy()
    var = module.running_var.detach().double().cpu().numpy()
    scale = 1.0 / np.sqrt(var + module.eps)
    shift = -mean * scale
    if module.affine:
        weight = module.weight.detach().double().cpu().numpy()
        bias = module.bias.detach().double().cpu().numpy()
        scale, shift = scale * weight, shift * weight + bias
    return scale, shift


def _apply_batch_norm(g, x, module):
    parts = _batch_norm(module)
    if parts is None:
        return x
    return g.Add(g.Mul(x, g.const(parts[0])), g.const(parts[1]))


def _array(tensor):
    return tensor.detach().double().cpu().numpy()


# -- logits of each estimator (x: float64 embeddings) ------------------------------


def _zero_shot_logits(g, est, x):
    return g.scale(g.matmul_t(g.normalize(x), est.text_features_), est.logit_scale_)


def _gda_logits(g, est, x):
    discriminant = g.affine(x, est.coef_, est.intercept_)
    if not hasattr(est, "discriminant_weight_"):
        return discriminant
    weight = est.discriminant_weight_ / est.scale_
    return g.Add(_zero_shot_logits(g, est, x), g.scale(discriminant, weight))


def _linear_probe_logits(g, est, x):
    module = est.net_.module_
    x = _apply_batch_norm(g, x, module.norm)
    return g.affine(x, _array(module.linear.weight), _array(module.linear.bias))


def _clip_adapter_logits(g, est, x):
    module = est.net_.module_
    x = _apply_batch_norm(g, x, module.norm)
    hidden = g.Relu(g.matmul_t(x, _array(module.down.weight)))
    adapted = g.Relu(g.matmul_t(hidden, _array(module.up.weight)))
    x = g.Add(g.scale(x, 1 - module.ratio), g.scale(adapted, module.ratio))
    return g.scale(g.matmul_t(g.normalize(x), _array(module.text)), module.logit_scale)


def _attention_probe_logits(g, est, x):
    module = est.net_.module_
    x = _apply_batch_norm(g, x, module.image_norm)
    text = _array(module.text)
    parts = _batch_norm(module.text_norm)
    if parts is not None:
        text = text * parts[0] + parts[1]
    scores = g.scale(g.matmul_t(x, text), 1 / np.sqrt(text.shape[1]))
    attended = g.MatMul(g.Softmax(scores, axis=1), g.const(text))
    x = g.Add(g.scale(x, 1 - module.ratio), g.scale(attended, module.ratio))
    x = _apply_batch_norm(g, x, module.post_norm)
    return g.affine(x, _array(module.linear.weight), _array(module.linear.bias))


def _zs_linear_probe_logits(g, est, x):
    module = est.net_.module_
    logits = g.matmul_t(g.normalize(x), _array(module.weight))
    return g.Add(g.scale(logits, module.logit_scale), g.const(_array(module.bias)))


def _tip_adapter_logits(g, est, x):
    # The cache's one-hot labels as a matrix (a key of class -1 is dropped,
    # a key's sample weight scales its row), instead of the module's
    # index_add_, which neither torch exporter handles.
    module = est.net_.module_
    x = g.normalize(x)
    logits = g.scale(g.matmul_t(x, _array(module.text)), module.logit_scale)
    labels = module.key_labels.cpu().numpy()
    votes = np.zeros((len(labels), len(est.classes_)))
    kept = labels >= 0
    votes[np.flatnonzero(kept), labels[kept]] = _array(module.key_weights)[kept]
    similarity = g.matmul_t(x, _array(module.keys))
    affinity = g.Exp(g.scale(g.Sub(similarity, g.const([1.0])), module.sharpness))
    cache = g.MatMul(affinity, g.const(votes))
    return g.Add(logits, g.scale(cache, module.cache_weight))


def _member_proba(g, estimator, x):
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator

    # A Pipeline member step by step (skl2onnx's pipeline converter cannot
    # run as a sub-estimator); probabilities as a tensor, not ZipMap's dicts.
    steps = [s for _, s in getattr(estimator, "steps", [("", estimator)])]
    for step in steps[:-1]:
        if step is not None and step != "passthrough":
            x = OnnxSubEstimator(step, x, op_version=g.opset)
    final = OnnxSubEstimator(
        steps[-1], x, op_version=g.opset, options={"zipmap": False}
    )
    return final[1]


def _clip_classifier_logits(g, est, x):
    from ._clip_classifier import LOG_PROBA_FLOOR

    total = None
    for name, weight in est.chosen_.items():
        member = g.log_proba(
            _member_proba(g, est.estimators_[name], x), LOG_PROBA_FLOOR
        )
        term = g.scale(member, weight / est.temperatures_[name])
        total = term if total is None else g.Add(total, term)
    # After with_classes the members' columns come in another order.
    columns = getattr(est, "_member_columns", None)
    if columns is not None:
        total = g.Gather(total, np.asarray(columns, dtype=np.int64), axis=1)
    return total


def _transclip_logits(g, est, x):
    floor = float(np.log(np.finfo(np.float64).tiny))
    log_proba = g.log_proba(_member_proba(g, est.estimator_, x), floor)
    if not est.uses_unlabelled_ or est.new_image_weight_ == 0:
        return log_proba
    likelihood = g.affine(g.normalize(x), est.coef_, est.intercept_)
    return g.Add(
        g.scale(log_proba, est.prior_weight),
        g.scale(likelihood, est.new_image_weight_),
    )


def _logit_builders():
    from ._attention_probe import AttentionProbeClassifier
    from ._clip_adapter import CLIPAdapterClassifier
    from ._clip_classifier import CLIPClassifier
    from ._gda import GDAClassifier
    from ._linear_probe import LinearProbeClassifier
    from ._tip_adapter import TipAdapterClassifier
    from ._transclip import TransCLIPClassifier
    from ._zero_shot import ZeroShotClassifier
    from ._zs_linear_probe import ZSLinearProbeClassifier

    return {
        ZeroShotClassifier: _zero_shot_logits,
        GDAClassifier: _gda_logits,
        LinearProbeClassifier: _linear_probe_logits,
        CLIPAdapterClassifier: _clip_adapter_logits,
        AttentionProbeClassifier: _attention_probe_logits,
        ZSLinearProbeClassifier: _zs_linear_probe_logits,
        TipAdapterClassifier: _tip_adapter_logits,
        CLIPClassifier: _clip_classifier_logits,
        TransCLIPClassifier: _transclip_logits,
    }


# -- converters -----------------------------------------------------------------------


def _opset(container):
    opset = container.target_opset
    if opset < MIN_OPSET:
        raise ValueError(
            f"sklearn-clip's ONNX converters need opset {MIN_OPSET} or later; "
            f"got target_opset={opset}."
        )
    return opset


def _output_elem_type(variable):
    from skl2onnx.common.data_types import guess_proto_type

    return guess_proto_type(variable.type)


def _label_constant(classes):
    classes = np.asarray(classes)
    if classes.dtype.kind in "iu":
        return classes.astype(np.int64)
    if classes.dtype.kind in "UO" and all(isinstance(c, str) for c in classes):
        return classes.astype(object)
    raise ValueError(
        f"ONNX export supports integer or string labels; classes_ has dtype "
        f"{classes.dtype} ({classes[:3].tolist()} ...)."
    )


def _double_input(scope, operator, container):
    """The operator's input cast to float64, as a typed variable (members
    converted by skl2onnx's parsers need to know their input's type).
    """
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType

    source = operator.inputs[0]
    variable = scope.declare_local_variable(
        "embeddings_float64", DoubleTensorType(source.type.shape)
    )
    container.add_node(
        "Cast",
        source.full_name,
        variable.onnx_name,
        name=scope.get_unique_operator_name("CastToDouble"),
        to=TensorProto.DOUBLE,
    )
    return variable


def _emit(expression, target, scope, container):
    """Add ``expression`` to the graph as the operator's output ``target``.

    Through an Identity node: the converters of members (CLIPClassifier's,
    TransCLIPClassifier's estimator) run inside this one, and skl2onnx
    refuses outputs named before the sub-graphs are built.
    """
    # run_converters: members are converted by their registered converters.
    expression.add_to(scope, container)
    produced = expression.outputs[0]
    name = produced.onnx_name if hasattr(produced, "onnx_name") else produced[0]
    container.add_node(
        "Identity",
        name,
        target.full_name,
        name=scope.get_unique_operator_name("Output"),
    )
    return name


def _add_labels(proba_name, classes, target, scope, container):
    """``classes[argmax(proba)]`` as the output ``target``."""
    from onnx import TensorProto

    classes = _label_constant(classes)
    index = scope.get_unique_variable_name("label_index")
    table = scope.get_unique_variable_name("classes")
    if classes.dtype == object:
        values = [str(c).encode("utf-8") for c in classes]
        container.add_initializer(table, TensorProto.STRING, [len(values)], values)
    else:
        container.add_initializer(
            table, TensorProto.INT64, [len(classes)], classes.tolist()
        )
    container.add_node(
        "ArgMax",
        proba_name,
        index,
        name=scope.get_unique_operator_name("ArgMax"),
        axis=1,
        keepdims=0,
    )
    container.add_node(
        "Gather",
        [table, index],
        target.full_name,
        name=scope.get_unique_operator_name("Labels"),
        axis=0,
    )


def _make_classifier_converter(build_logits):
    def convert(scope, operator, container):
        est = operator.raw_operator
        g = _Graph(_opset(container), scope)
        x = _double_input(scope, operator, container)
        proba = g.Softmax(build_logits(g, est, x), axis=1)
        proba_out = g.Cast(proba, to=_output_elem_type(operator.outputs[1]))
        proba_name = _emit(proba_out, operator.outputs[1], scope, container)
        # nocl: skl2onnx's option to output class indices, not labels
        nocl = container.get_options(est, {"nocl": False})["nocl"]
        classes = np.arange(len(est.classes_)) if nocl else est.classes_
        _add_labels(proba_name, classes, operator.outputs[0], scope, container)

    return convert


def _zero_shot_logits_shape(operator):
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    est = operator.raw_operator
    kind = operator.inputs[0].type
    width = len(est.classes_) + (est.n_features_in_ if est.append else 0)
    cls = DoubleTensorType if isinstance(kind, DoubleTensorType) else FloatTensorType
    operator.outputs[0].type = cls([kind.shape[0], width])


def _convert_zero_shot_logits(scope, operator, container):
    est = operator.raw_operator
    g = _Graph(_opset(container))
    x_in = operator.inputs[0]
    logits = _zero_shot_logits(g, est, _double_input(scope, operator, container))
    elem = _output_elem_type(operator.outputs[0])
    name = [operator.outputs[0].full_name]
    if est.append:
        out = g.Concat(x_in, g.Cast(logits, to=elem), axis=1, output_names=name)
    else:
        out = g.Cast(logits, to=elem, output_names=name)
    out.add_to(scope, container)


def _featurizer_shape(operator):
    from skl2onnx.common.data_types import FloatTensorType

    operator.outputs[0].type = FloatTensorType(
        [operator.inputs[0].type.shape[0], _tower_width(operator.raw_operator)]
    )


_TOWER_OPTIONS = {"quantize": [False, True], "optimize": [True, False]}


def _convert_featurizer(scope, operator, container):
    est = operator.raw_operator
    options = container.get_options(est, {"quantize": False, "optimize": True})
    tower = image_tower_onnx(
        est,
        opset=_opset(container),
        quantize=options["quantize"],
        optimize=options["optimize"],
    )
    _splice(tower, operator, scope, container)


def _splice(model, operator, scope, container):
    """Copy a one-input, one-output ONNX model's graph into the container,
    its names made unique, its input and output wired to the operator's.
    """
    from onnx import inliner

    model = inliner.inline_local_functions(model)
    graph = model.graph
    names = {graph.input[0].name: operator.inputs[0].full_name}
    names[graph.output[0].name] = operator.outputs[0].full_name

    def rename(name):
        if not name:
            return name  # an omitted optional input
        if name not in names:
            names[name] = scope.get_unique_variable_name(f"tower_{name}")
        return names[name]

    for tensor in graph.initializer:
        copy = type(tensor)()
        copy.CopyFrom(tensor)
        copy.name = rename(tensor.name)
        container.initializers.append(copy)
    for node in graph.node:
        copy = type(node)()
        copy.CopyFrom(node)
        copy.input[:] = [rename(n) for n in node.input]
        copy.output[:] = [rename(n) for n in node.output]
        copy.name = scope.get_unique_operator_name(f"tower_{node.op_type}")
        if any(a.g.node or a.graphs for a in node.attribute):
            raise ValueError("the image tower has sub-graphs; cannot splice it")
        container.nodes.append(copy)
    for opset in model.opset_import:
        container.node_domain_version_pair_sets.add((opset.domain, opset.version))


def register_onnx_converters():
    """Register sklearn-clip's converters with skl2onnx (idempotent).

    After this, ``skl2onnx.to_onnx(estimator, X[:1])`` converts every
    classifier of the package (all but :class:`VisualPromptClassifier`,
    which takes images), :class:`ZeroShotLogits`, :class:`CLIPFeaturizer`
    (its image tower; input: preprocessed pixels) and Pipelines mixing them
    with scikit-learn steps. :func:`export_onnx` calls it.

    Examples
    --------
    >>> import numpy as np
    >>> from skl2onnx import to_onnx
    >>> from sklearn_clip import ZeroShotClassifier, register_onnx_converters
    >>> register_onnx_converters()
    >>> X = np.eye(2, 4, dtype=np.float32)
    >>> clf = ZeroShotClassifier(text_features=X).fit(X, ["a", "b"])
    >>> onx = to_onnx(clf, X[:1], options={"zipmap": False})
    >>> [o.name for o in onx.graph.output]
    ['label', 'probabilities']
    """
    global _registered
    if _registered:
        return
    _require_onnx()
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
    )

    from ._featurizer import CLIPFeaturizer
    from ._zero_shot_logits import ZeroShotLogits

    for cls, build in _logit_builders().items():
        update_registered_converter(
            cls,
            f"SklearnClip{cls.__name__}",
            calculate_linear_classifier_output_shapes,
            _make_classifier_converter(build),
            options={"zipmap": [True, False, "columns"], "nocl": [True, False]},
        )
    update_registered_converter(
        ZeroShotLogits,
        "SklearnClipZeroShotLogits",
        _zero_shot_logits_shape,
        _convert_zero_shot_logits,
    )
    update_registered_converter(
        CLIPFeaturizer,
        "SklearnClipCLIPFeaturizer",
        _featurizer_shape,
        _convert_featurizer,
        options=_TOWER_OPTIONS,
    )
    _registered = True


# -- the image tower and its preprocessing ----------------------------------------


def _loaded_clip(featurizer):
    from ._clip import load_clip

    return load_clip(featurizer.model, featurizer.pretrained, "cpu")


def preprocess_settings(featurizer):
    """The featurizer's image preprocessing as plain settings for
    :func:`sklearn_clip._onnx_runtime.preprocess_image` (torch-free).

    Read from the one transform the featurizer applies (``load_clip(...)
    .preprocess``, open_clip's evaluation transform for the model's
    configuration), so it follows whatever that transform is; a step with no
    torch-free equivalent raises instead of being approximated.
    """
    try:
        return transform_settings(_loaded_clip(featurizer).preprocess)
    except ValueError as exc:
        raise ValueError(
            f"{exc} (model {featurizer.model!r}); export the head alone "
            "(input: embeddings) instead."
        ) from None


def _interpolation(step):
    name = str(getattr(step.interpolation, "value", step.interpolation))
    if name not in ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"):
        raise ValueError(f"unsupported resize interpolation {name!r}")
    return name


def transform_settings(transform):
    """Settings of an open_clip evaluation transform (see
    :func:`preprocess_settings`): torchvision's ``Resize`` and
    ``CenterCrop``, open_clip's ``ResizeKeepRatio`` and ``CenterCropOrPad``
    (every ``resize_mode``), ``Normalize``.
    """
    steps, mean, std = [], None, None
    for step in getattr(transform, "transforms", [transform]):
        name = type(step).__name__
        if name == "Resize":
            size = step.size
            size = [size] if isinstance(size, int) else list(size)
            steps.append(
                {
                    "op": "resize",
                    "size": size,
                    "max_size": step.max_size,
                    "interpolation": _interpolation(step),
                }
            )
        elif name == "ResizeKeepRatio":
            if step.random_scale_prob or step.random_aspect_prob:
                raise ValueError(f"{step!r} is random (a training transform)")
            steps.append(
                {
                    "op": "resize_keep_ratio",
                    "size": list(step.size),
                    "longest": float(step.longest),
                    "interpolation": _interpolation(step),
                }
            )
        elif name in ("CenterCrop", "CenterCropOrPad"):
            fill = getattr(step, "fill", 0)
            steps.append(
                {
                    "op": "center_crop",
                    "size": list(step.size),
                    "fill": list(fill) if isinstance(fill, (list, tuple)) else fill,
                }
            )
        elif name == "Normalize":
            mean, std = [float(v) for v in step.mean], [float(v) for v in step.std]
        elif name in ("ToTensor", "MaybeToTensor", "MaybeConvertMode") or (
            name == "function" and "rgb" in getattr(step, "__name__", "")
        ):
            continue  # images are decoded to RGB first; pixels become float32
        else:
            raise ValueError(
                f"The CLIP preprocessing step {step!r} has no torch-free "
                "equivalent in sklearn-clip's ONNX serving yet"
            )
    if mean is None:
        raise ValueError(f"The CLIP preprocessing has no Normalize step: {transform}")
    return {"steps": steps, "mean": mean, "std": std}


def _image_tower_module(model, normalize):
    """``encode_image`` (then the featurizer's normalisation) as a module."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixels):
            features = self.model.encode_image(pixels).float()
            if normalize:
                features = torch.nn.functional.normalize(features, dim=-1)
            return features

    return ImageTower().eval()


def _tower_width(featurizer):
    import torch

    clip = _loaded_clip(featurizer)
    with torch.no_grad():
        pixels = torch.zeros(1, 3, *clip.image_size)
        return int(clip.model.encode_image(pixels).shape[1])


def image_tower_onnx(featurizer, *, opset=18, quantize=False, optimize=True):
    """The featurizer's CLIP image tower as an ONNX model.

    Input ``pixels`` (float32, ``(batch, 3, H, W)``, batch dynamic, from
    :func:`preprocess_settings`), output ``embeddings`` (unit norm when the
    featurizer normalises). Exported with ``torch.onnx.export(dynamo=True)``
    (the TorchScript exporter cannot export the fused attention path);
    ``quantize=True`` adds onnxruntime's dynamic int8 quantisation of the
    matrix products.
    """
    import torch

    clip = _loaded_clip(featurizer)
    tower = _image_tower_module(clip.model, featurizer.normalize)
    example = torch.zeros(2, 3, *clip.image_size)
    with torch.no_grad():
        program = torch.onnx.export(
            tower,
            (example,),
            input_names=["pixels"],
            output_names=["embeddings"],
            opset_version=max(opset, 18),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            optimize=optimize,
            verbose=False,
        )
    model = program.model_proto
    if quantize:
        model = _quantized(model)
    return model


def _quantized(model):
    """The model with its MatMul weights in int8 (onnxruntime's dynamic
    quantisation).
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "fp32.onnx")
        target = os.path.join(folder, "int8.onnx")
        onnx.save(model, source)
        quantize_dynamic(
            source, target, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8
        )
        return onnx.load(target)


# -- one file ------------------------------------------------------------------------


def _final_step(estimator):
    steps = getattr(estimator, "steps", None)
    return estimator if steps is None else steps[-1][1]


def export_onnx(
    estimator, path=None, *, target_opset=None, quantize=False, optimize=True
):
    """Convert a fitted classifier, or a Pipeline ending in one, to ONNX.

    A Pipeline starting with :class:`CLIPFeaturizer` (``make_clip_pipeline``)
    becomes one graph from preprocessed pixels to probabilities: its input
    is ``pixels`` (float32, ``(batch, 3, H, W)``) and the preprocessing
    settings are stored in the metadata. Anything else takes CLIP
    embeddings (``embeddings``, float32, ``(batch, n_features)``). Outputs:
    ``label`` and ``probabilities`` (float32). The class labels are stored
    in the metadata; :class:`sklearn_clip._onnx_runtime.OnnxClassifier`
    (and ``sklearn-clip predict``) serve the file without torch.

    Parameters
    ----------
    estimator : fitted classifier or Pipeline
    path : str or path, default=None
        Where to write the model; None only returns it.
    target_opset : int, default=None
        ONNX opset; None uses skl2onnx's latest (at least 18 for the tower).
    quantize : bool, default=False
        Dynamic int8 quantisation of the image tower's matrix products.
    optimize : bool, default=True
        Optimise the exported tower (torch's ONNX optimiser).

    Returns
    -------
    onnx.ModelProto

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import ZeroShotClassifier
    >>> from sklearn_clip._onnx import export_onnx
    >>> X = np.eye(2, 4, dtype=np.float32)
    >>> clf = ZeroShotClassifier(text_features=X).fit(X, ["cat", "dog"])
    >>> model = export_onnx(clf)
    >>> [i.name for i in model.graph.input]
    ['embeddings']
    """
    register_onnx_converters()
    from onnx import helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.utils.validation import check_is_fitted

    from ._featurizer import CLIPFeaturizer

    final = _final_step(estimator)
    if type(final).__name__ == "VisualPromptClassifier":
        raise ValueError(
            "VisualPromptClassifier does not convert to ONNX yet (it learns a "
            "prompt on the pixels); the package's classifiers on embeddings do."
        )
    check_is_fitted(final)
    if not hasattr(final, "classes_"):
        raise ValueError(
            f"export_onnx converts classifiers; {type(final).__name__} has no classes_."
        )
    steps = getattr(estimator, "steps", [])
    first = steps[0][1] if steps else None
    options = {id(final): {"zipmap": False}}
    if isinstance(first, CLIPFeaturizer):
        if first.quantize and not quantize:
            quantize = True  # serve what the featurizer computes
        if first.precision not in ("auto", "fp32"):
            warn(
                f"CLIPFeaturizer(precision={first.precision!r}): the exported "
                "image tower computes in float32.",
                UserWarning,
            )
        clip = _loaded_clip(first)
        inputs = [("pixels", FloatTensorType([None, 3, *clip.image_size]))]
        options[id(first)] = {"quantize": quantize, "optimize": optimize}
        metadata = {
            META_INPUT: "pixels",
            META_PREPROCESS: json.dumps(preprocess_settings(first)),
        }
        opset = max(target_opset or 18, 18)
    else:
        if any(isinstance(step, CLIPFeaturizer) for _, step in steps):
            raise ValueError("CLIPFeaturizer must be the first step of the pipeline.")
        inputs = [("embeddings", FloatTensorType([None, final_input_width(estimator)]))]
        metadata = {META_INPUT: "embeddings"}
        opset = target_opset
    model = convert_sklearn(
        estimator, initial_types=inputs, options=options, target_opset=opset
    )
    metadata[META_CLASSES] = json.dumps(np.asarray(final.classes_).tolist())
    metadata[META_VERSION] = __version__
    helper.set_model_props(model, metadata)
    if path is not None:
        _save(model, path)
    return model


def final_input_width(estimator):
    """The number of features the estimator (or pipeline) takes."""
    width = getattr(estimator, "n_features_in_", None)
    if width is None:
        width = getattr(_final_step(estimator), "n_features_in_", None)
    if width is None:
        raise ValueError(f"cannot tell the input width of {estimator!r}")
    return int(width)


def _save(model, path):
    """Write ``model`` to ``path`` atomically (a partial file never remains)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(model.SerializeToString())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
