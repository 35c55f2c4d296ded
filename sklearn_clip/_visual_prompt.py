"""VisualPromptClassifier: a learned input-space prompt trained through the
frozen CLIP image encoder (Bahng et al. 2022).
"""

import copy
import math
from numbers import Integral, Real

import numpy as np
import torch
from PIL import Image
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
)
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, LRScheduler
from skorch.utils import to_tensor
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ._base import (
    BaseCLIPEstimator,
    ClassifierOutputMixin,
    TextClassesMixin,
    encode_training_labels,
    resolve_sample_weight,
)
from ._clip import embedding_dim, load_clip
from ._compat import Interval, StrOptions, _fit_context
from ._images import (
    ImageLoadError,
    check_image_inputs,
    checked_num_workers,
    describe,
    iter_decoded,
    load_image,
    split_preprocess,
)
from ._torch_utils import autocast, loading_device, seeded_torch, torch_generator
from ._training import HeadModule, NetAsArraysMixin, PlainLogMixin
from ._validation import TEXT_PARAMETER_CONSTRAINTS

#: The text template of the visual prompting paper.
PAPER_TEMPLATE = "This is a photo of a {}"

# Warm-up length when ``warmup_steps="auto"``: the paper's 1,000 steps, but at
# most a tenth of training (few-shot runs have far fewer steps than the paper's).
_MAX_AUTO_WARMUP = 1000


class PromptModule(HeadModule):
    """Holds the prompt and nothing else that is trainable.

    ``forward`` takes uint8 images at the model input size, applies CLIP's
    normalisation and adds the prompt. The frozen CLIP encoder is *not* a
    child of this module: it is looked up by name at use time, so it is never
    pickled with the estimator nor given to the optimizer.
    """

    def __init__(self, design, size, image_size, mean, std, text, logit_scale):
        super().__init__()
        height, width = image_size
        self.design = design
        self.size = size
        self.image_size = (height, width)
        self.logit_scale = logit_scale
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("text", text)
        # Zero initialisation: training starts from plain zero-shot CLIP.
        if design == "padding":
            inner = height - 2 * size
            self.pad_top = nn.Parameter(torch.zeros(3, size, width))
            self.pad_bottom = nn.Parameter(torch.zeros(3, size, width))
            self.pad_left = nn.Parameter(torch.zeros(3, inner, size))
            self.pad_right = nn.Parameter(torch.zeros(3, inner, size))
        else:
            self.patch = nn.Parameter(torch.zeros(3, size, size))

    def full_prompt(self):
        """The prompt as one ``(3, H, W)`` tensor; random patches shown top-left."""
        height, width = self.image_size
        size = self.size
        if self.design == "padding":
            inner = self.pad_left.new_zeros(3, height - 2 * size, width - 2 * size)
            middle = torch.cat([self.pad_left, inner, self.pad_right], dim=2)
            return torch.cat([self.pad_top, middle, self.pad_bottom], dim=1)
        return F.pad(self.patch, (0, width - size, 0, height - size))

    def _random_patches(self, n_images, generator):
        height, width = self.image_size
        size = self.size
        device = self.patch.device
        # Drawn on the CPU so that the seeded global RNG (or ``generator``)
        # decides the placement on every device.
        top = torch.randint(0, height - size + 1, (n_images, 1, 1), generator=generator)
        left = torch.randint(0, width - size + 1, (n_images, 1, 1), generator=generator)
        offsets = torch.arange(size)
        rows = (top + offsets.view(1, -1, 1)).to(device)
        cols = (left + offsets.view(1, 1, -1)).to(device)
        canvas = self.patch.new_zeros(n_images, height, width, 3)
        image_index = torch.arange(n_images, device=device).view(-1, 1, 1)
        canvas[image_index, rows, cols] = self.patch.permute(1, 2, 0)
        return canvas.permute(0, 3, 1, 2)

    def forward(self, images, use_prompt=True):
        x = (images.float() / 255.0 - self.mean) / self.std
        if not use_prompt:
            return x
        if self.design == "random_patch":
            # Training draws a new place per image and epoch (from the fit's
            # generator); prediction uses a fixed sequence of places, so that
            # it is deterministic.
            generator = (
                getattr(self, "generator", None)
                if self.training
                else torch.Generator().manual_seed(0)
            )
            return x + self._random_patches(len(x), generator)
        return x + self.full_prompt()


def prompted_logits(module, images, clip, precision, use_prompt=True):
    """CLIP logits of uint8 ``images`` with the prompt of ``module`` added."""
    x = module(images, use_prompt=use_prompt)
    with autocast(clip.device, precision):
        features = clip.model.encode_image(x)
    features = F.normalize(features.float(), dim=-1)
    return module.logit_scale * features @ module.text.T


class WarmupCosine:
    """Learning-rate factor: linear warm-up, then cosine decay to zero
    (a picklable ``lr_lambda`` for :class:`torch.optim.lr_scheduler.LambdaLR`).
    """

    def __init__(self, warmup_steps, total_steps):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step):
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class EpochProgress(Callback):
    """One tqdm bar over epochs, showing the training loss."""

    def on_train_begin(self, net, **kwargs):
        self.bar_ = tqdm(total=net.max_epochs, desc="visual prompt", unit="epoch")

    def on_epoch_end(self, net, **kwargs):
        self.bar_.update(1)
        self.bar_.set_postfix(loss=f"{net.history[-1, 'train_loss']:.4f}")

    def on_train_end(self, net, **kwargs):
        self.bar_.close()
        del self.bar_  # a tqdm bar does not pickle


class PromptNet(PlainLogMixin, NeuralNetClassifier):
    """skorch classifier whose module is the prompt; the logits come from the
    frozen CLIP image encoder, found by name in the process-wide cache.
    """

    def __init__(self, *args, clip_model, clip_pretrained, precision="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.clip_model = clip_model
        self.clip_pretrained = clip_pretrained
        self.precision = precision

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = to_tensor(y_true, device=self.device)
        if y_true.ndim == 2:  # [label, sample weight] rows: weighted mean loss
            labels, weights = y_true[:, 0].long(), y_true[:, 1].to(y_pred.dtype)
            losses = F.cross_entropy(y_pred, labels, reduction="none")
            return (weights * losses).sum() / weights.sum()
        return super().get_loss(y_pred, y_true, X=X, training=training)

    def infer(self, x, **fit_params):
        x = to_tensor(x, device=self.device)
        clip = load_clip(self.clip_model, self.clip_pretrained, self.device)
        return prompted_logits(self.module_, x, clip, self.precision)


class DecodeEveryEpoch(torch.utils.data.Dataset):
    """Training images decoded on every access (``cache_images=False``)."""

    def __init__(self, items, labels, to_uint8):
        self.items = items
        self.labels = labels
        self.to_uint8 = to_uint8

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        try:
            image = self.to_uint8(load_image(item))
        except Exception as exc:  # noqa: BLE001 - re-raised naming the item
            raise ImageLoadError(
                [(index, describe(item), f"{type(exc).__name__}: {exc}")],
                len(self.items),
            ) from exc
        return image, self.labels[index]


class VisualPromptClassifier(
    NetAsArraysMixin,
    TextClassesMixin,
    ClassifierOutputMixin,
    ClassifierMixin,
    BaseCLIPEstimator,
):
    """Classify images with CLIP after adding a learned visual prompt.

    One perturbation in pixel space (the *visual prompt*), shared by all
    images of the task, is added to every preprocessed image before the
    frozen CLIP image encoder; the logits are CLIP's image-text logits
    against the class text embeddings, as in zero-shot classification. Only
    the prompt is trained (through skorch); CLIP's weights never change and
    are not part of the fitted estimator: they are loaded by name from the
    process-wide cache whenever they are needed, also after unpickling.

    The prediction methods (``predict``, ``predict_proba``,
    ``predict_log_proba``, ``decision_function``) take images and the
    keyword ``use_prompt=True``; ``use_prompt=False`` gives plain zero-shot
    CLIP on the same images, for comparison.

    Parameters
    ----------
    model : str, default="ViT-B-32"
        open_clip architecture, or ``"hf-hub:ORG/NAME"`` /
        ``"local-dir:FOLDER"``.
    pretrained : str, path or None, default="laion2b_s34b_b79k"
        open_clip tag or local checkpoint path (see :func:`load_clip`).
    preprocess : None, str or dict, default=None
        The image preprocessing; None is the weights' own (see
        :class:`CLIPFeaturizer`).
    prompt : {"padding", "fixed_patch", "random_patch"}, default="padding"
        Prompt design: a learnable frame of width ``prompt_size`` around the
        image (the paper's best), a ``prompt_size`` square at the top-left
        corner, or that square at a random place per image (a new place
        every epoch; prediction uses a fixed, seeded sequence of places).
    prompt_size : int, default=30
        Frame width or square side in pixels of the model input (30 on
        224 x 224 is the paper's 69,840-parameter padding prompt).
    templates : str or list of str, default="This is a photo of a {}"
        Prompt templates for the class names (the paper's template).
    class_names, text_features, logit_scale
        Where the class text embeddings come from; see
        :class:`ZeroShotClassifier`.
    lr : float, default=40.0
        Peak learning rate of SGD (the paper's value; prompts live in
        normalised pixel units and get small gradients).
    momentum : float, default=0.9
        SGD momentum.
    max_epochs : int, default=1000
        Training epochs (the paper's). Each epoch passes every training
        image forward and backward through the image encoder: on a CPU use
        far fewer, or a GPU.
    batch_size : int, default=256
        Images per step, also at prediction time.
    warmup_steps : int or "auto", default="auto"
        Linear warm-up steps before the cosine decay. ``"auto"`` is the
        paper's 1,000, capped at a tenth of all steps.
    cache_images : bool, default=True
        Decode and resize the training images once and keep them as uint8
        tensors at the model input size (``3 * H * W`` bytes each) for every
        epoch. False decodes every image again every epoch (less memory,
        slower; see ``benchmarks/visual_prompt.py``).
    num_workers : int, default=0
        DataLoader worker processes for decoding.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ...
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Precision of the image and text encoders; ``"auto"`` is bfloat16
        mixed precision on CUDA and float32 on CPU. The prompt itself is
        always float32.
    random_state : int, RandomState instance or None, default=None
        Seeds shuffling and random-patch placement.
    verbose : int, default=1
        0: silent; 1: a progress bar over epochs (and over decoding when it
        takes several batches); 2: skorch's per-epoch table.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted labels seen in ``fit``.
    text_features_ : ndarray of shape (n_classes, embedding_dim)
        Unit-norm class text embeddings, rows in ``classes_`` order.
    logit_scale_ : float
        Temperature of the logits.
    prompt_ : ndarray of shape (3, H, W), float32
        The learned prompt in normalised pixel units at the model input size,
        zero where the design has no parameters (the inside of the padding
        frame; outside the square of the patch designs, where the random
        patch is shown at the top-left corner).
    net_ : skorch.NeuralNetClassifier
        The trained net; its module holds only the prompt and class text.

    See Also
    --------
    ZeroShotClassifier : The same logits without a prompt.
    CLIPAdapterClassifier : Adaptation on cached embeddings, much cheaper to train.

    Notes
    -----
    X is images (file paths, PIL images or uint8 arrays, as for
    :class:`CLIPFeaturizer`), not embeddings: the prompt acts on pixels, so
    every training step runs the image encoder forward and backward.
    Unreadable images raise one error naming every bad item.

    Follows the paper's recipe (a padding prompt of 30 pixels added to the
    normalised image, SGD with momentum 0.9 at lr 40, warm-up then cosine
    decay, the template "This is a photo of a {}"). Deviations: the warm-up
    is at most a tenth of training (``warmup_steps="auto"``; the paper's
    1,000 steps exceed whole few-shot runs), and the last epoch is kept
    (the official code keeps the best epoch on the test split).

    References
    ----------
    .. [1] Bahng, Jahanian, Sankaranarayanan and Isola, "Exploring Visual
       Prompts for Adapting Large-Scale Models", arXiv:2203.17274, 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_clip import VisualPromptClassifier
    >>> rng = np.random.default_rng(0)
    >>> images = list(rng.integers(0, 256, size=(8, 64, 64, 3), dtype=np.uint8))
    >>> labels = ["ant", "bee"] * 4
    >>> clf = VisualPromptClassifier(
    ...     "sklearn-clip-tiny", pretrained=None, prompt_size=8, max_epochs=2,
    ...     device="cpu", random_state=0, verbose=0,
    ... ).fit(images, labels)
    >>> clf.prompt_.shape
    (3, 64, 64)
    >>> clf.predict(images[:2]).shape
    (2,)
    """

    _fitted_attributes = ("classes_", "text_features_", "logit_scale_", "net_")
    _rebuilt_buffers = ("text",)
    _parameter_constraints = {
        **TEXT_PARAMETER_CONSTRAINTS,
        "preprocess": [str, dict, None],
        "prompt": [StrOptions({"padding", "fixed_patch", "random_patch"})],
        "prompt_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "warmup_steps": [
            Interval(Integral, 0, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "cache_images": ["boolean"],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model="ViT-B-32",
        pretrained="laion2b_s34b_b79k",
        *,
        preprocess=None,
        prompt="padding",
        prompt_size=30,
        templates=PAPER_TEMPLATE,
        class_names=None,
        text_features=None,
        logit_scale=None,
        lr=40.0,
        momentum=0.9,
        max_epochs=1000,
        batch_size=256,
        warmup_steps="auto",
        cache_images=True,
        num_workers=0,
        device="auto",
        precision="auto",
        random_state=None,
        verbose=1,
    ):
        self.model = model
        self.pretrained = pretrained
        self.preprocess = preprocess
        self.prompt = prompt
        self.prompt_size = prompt_size
        self.templates = templates
        self.class_names = class_names
        self.text_features = text_features
        self.logit_scale = logit_scale
        self.lr = lr
        self.momentum = momentum
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.warmup_steps = warmup_steps
        self.cache_images = cache_images
        self.num_workers = num_workers
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the visual prompt.

        Parameters
        ----------
        X : sequence of paths, PIL images or uint8 arrays
            Training images.
        y : array-like of shape (n_samples,)
            Labels: class names, or any labels with ``class_names`` or
            ``text_features`` given.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each image in the loss (weighted mean over each batch).

        Returns
        -------
        self : VisualPromptClassifier
        """
        items = check_image_inputs(X)
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but y is None."
            )
        y = column_or_1d(y, warn=True)
        check_consistent_length(items, y)
        self.classes_, y_encoded = encode_training_labels(self, y)
        clip = load_clip(
            self.model, self.pretrained, self.device, preprocess=self.preprocess
        )
        self._check_prompt_fits(clip.image_size)
        self.text_features_, self.logit_scale_ = self._class_text(
            self.classes_,
            embedding_dim(self.model),
            self.class_names,
            self.text_features,
        )
        to_uint8, mean, std = split_preprocess(clip.preprocess)
        weights = resolve_sample_weight(items, y, sample_weight, class_weight=None)
        dataset = self._training_set(items, y_encoded, to_uint8, clip, weights)
        module = self._prompt_module(clip.image_size, mean, std)
        generator = torch_generator(self.random_state)
        with seeded_torch(self.random_state):
            self.net_ = self._new_net(
                module,
                clip.device,
                callbacks=self._training_callbacks(len(items)),
                generator=generator,
            )
            self.net_.initialize()
        # Training draws its own stream (shuffling, random patch places):
        # concurrent fits in threads never share torch's global one.
        module.generator = generator
        try:
            self.net_.fit(dataset, y=None)
        finally:
            del module.generator
        # Momentum buffers are as large as the prompt; they would only matter
        # for continued training, which this estimator does not offer.
        self.net_.optimizer_.state.clear()
        self.net_.module_.eval()  # fitted: prediction needs no copy to switch
        return self

    def _training_set(self, items, y_encoded, to_uint8, clip, sample_weight=None):
        """Images decoded once (``cache_images``) or at every epoch, with
        labels (rows ``[label, weight]`` with sample weights).
        """
        labels = torch.as_tensor(y_encoded, dtype=torch.int64)
        if sample_weight is not None:
            weights = torch.as_tensor(sample_weight, dtype=torch.float64)
            labels = torch.stack([labels.double(), weights], dim=1)
        if self.cache_images:
            return torch.utils.data.TensorDataset(
                self._decode_all(items, to_uint8, clip), labels
            )
        return DecodeEveryEpoch(items, labels, to_uint8)

    def _prompt_module(self, image_size, mean, std):
        return PromptModule(
            self.prompt,
            self.prompt_size,
            image_size,
            mean,
            std,
            torch.tensor(np.ascontiguousarray(self.text_features_, dtype=np.float32)),
            self.logit_scale_,
        )

    def _training_callbacks(self, n_items):
        """Warm-up then cosine decay per batch, and the epoch progress bar."""
        steps = self.max_epochs * math.ceil(n_items / self.batch_size)
        warmup = self.warmup_steps
        if warmup == "auto":
            warmup = min(_MAX_AUTO_WARMUP, steps // 10)
        schedule = LRScheduler(
            policy=torch.optim.lr_scheduler.LambdaLR,
            lr_lambda=WarmupCosine(warmup, steps),
            step_every="batch",
        )
        callbacks = [("lr_schedule", schedule)]
        if self.verbose == 1:
            callbacks.append(("progress", EpochProgress()))
        return callbacks

    def _new_net(self, module, device, callbacks=(), generator=None):
        return PromptNet(
            module=module,
            criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.SGD,
            optimizer__momentum=self.momentum,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_train__shuffle=True,
            iterator_train__generator=generator,
            iterator_train__num_workers=(
                0 if self.cache_images else checked_num_workers(self.num_workers)
            ),
            train_split=None,
            classes=list(range(len(self.classes_))),
            callbacks=list(callbacks),
            device=str(device),
            verbose=int(self.verbose >= 2),
            clip_model=self.model,
            clip_pretrained=self.pretrained,
            precision=self.precision,
        )

    def _check_prompt_fits(self, image_size):
        height, width = image_size
        if self.prompt == "padding" and 2 * self.prompt_size >= min(height, width):
            raise ValueError(
                f"prompt_size={self.prompt_size} is too wide for a padding prompt on "
                f"{height}x{width} model inputs: the frame must leave an inside "
                f"(2 * prompt_size < {min(height, width)})."
            )
        if self.prompt != "padding" and self.prompt_size > min(height, width):
            raise ValueError(
                f"prompt_size={self.prompt_size} is larger than the {height}x{width} "
                "model input."
            )

    def _decode_all(self, items, to_uint8, clip):
        height, width = clip.image_size
        images = torch.empty((len(items), 3, height, width), dtype=torch.uint8)
        for indices, batch in iter_decoded(
            items,
            to_uint8,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            progress="auto" if self.verbose else False,
            desc="decoding images",
        ):
            images[indices] = batch
        return images

    # -- prediction -------------------------------------------------------------
    @property
    def prompt_(self):
        check_is_fitted(self, "net_")
        return self.net_.module_.full_prompt().detach().cpu().numpy()

    def _checked_logits(self, X, *, use_prompt=True):
        check_is_fitted(self)
        items = check_image_inputs(X)
        clip = load_clip(
            self.model, self.pretrained, self.device, preprocess=self.preprocess
        )
        to_uint8, _, _ = split_preprocess(clip.preprocess)
        module = self.net_.module_
        if module.training or module.mean.device != clip.device:
            # A copy in evaluation mode on the model's device: predicting
            # never changes the fitted estimator (the prompt is small).
            module = copy.deepcopy(module).to(clip.device).eval()
        logits = np.empty((len(items), len(self.classes_)), dtype=np.float32)
        with torch.inference_mode():
            for indices, batch in iter_decoded(
                items,
                to_uint8,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                pin_memory=clip.device.type == "cuda",
                progress="auto" if self.verbose else False,
                desc="visual prompt predict",
            ):
                batch = batch.to(clip.device, non_blocking=True)
                batch_logits = prompted_logits(
                    module, batch, clip, self.precision, use_prompt=use_prompt
                )
                logits[indices] = batch_logits.float().cpu().numpy()
        return logits

    def save_prompt_image(self, path):
        """Save the learned prompt as a PNG to look at.

        The prompt is de-normalised with CLIP's mean and standard deviation,
        so pixels without prompt parameters show CLIP's mean colour.

        Parameters
        ----------
        path : str or path
            Output file; the format follows the suffix (``.png`` advised).
        """
        prompt = torch.as_tensor(self.prompt_)  # raises NotFittedError first
        module = self.net_.module_
        pixels = (prompt * module.std.cpu() + module.mean.cpu()).clamp(0.0, 1.0)
        array = (pixels.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        Image.fromarray(array, mode="RGB").save(path)

    def _net_config(self, net):
        return {"image_size": list(net.module_.image_size)}

    def _rebuild_net(self, arrays, config):
        module = self._prompt_module(
            tuple(config["image_size"]),
            torch.tensor(np.array(arrays["mean"])),
            torch.tensor(np.array(arrays["std"])),
        )
        net = self._new_net(module, loading_device(self.device))
        net.initialize()
        net.module_.eval()
        return net

    def _on_classes_changed(self, previous):
        # The prompt is class-agnostic: only the class rows of the logits change.
        module = self.net_.module_
        module.text = torch.as_tensor(
            self.text_features_, dtype=torch.float32, device=module.text.device
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.non_deterministic = False
        return tags
