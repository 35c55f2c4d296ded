"""Hugging Face transformers CLIP checkpoints as open_clip ``local-dir:`` folders."""

import json
import os
from pathlib import Path

import torch

#: transformers' ``resample`` codes (PIL's) -> open_clip's interpolation.
_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def convert_transformers_clip(source, folder):
    """Convert a transformers ``CLIPModel`` into an open_clip folder.

    The folder holds ``open_clip_config.json`` (the architecture and the
    image preprocessing) and ``open_clip_model.safetensors``; load it with
    ``model="local-dir:FOLDER"`` in any estimator, offline. Image and text
    embeddings equal transformers' ``get_image_features`` and
    ``get_text_features`` (the tokenizer is open_clip's, which is CLIP's
    byte-pair encoding with 49408 tokens, as transformers' ``CLIPTokenizer``).

    Parameters
    ----------
    source : str, path or transformers.CLIPModel
        A folder saved by ``CLIPModel.save_pretrained`` (or downloaded with
        ``hf download openai/clip-vit-base-patch32 --local-dir FOLDER``):
        ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``,
        and ``preprocessor_config.json`` when present; or a ``CLIPModel``.
    folder : str or path
        Where to write the open_clip folder (created if needed).

    Returns
    -------
    model : str
        ``"local-dir:FOLDER"``, the model name to pass to the estimators.

    Examples
    --------
    >>> from sklearn_clip import CLIPFeaturizer, convert_transformers_clip
    >>> name = convert_transformers_clip("clip-vit-base-patch32/",
    ...                                  "clip-b32-open_clip/")  # doctest: +SKIP
    >>> CLIPFeaturizer(name).fit_transform(["cat.jpg"])  # doctest: +SKIP
    """
    config, state_dict, preprocessor = _read(source)
    model_cfg = _model_config(config)
    state = _convert_state_dict(state_dict, model_cfg)
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    preprocess_cfg = _preprocess_config(preprocessor)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2)
    )
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in state.items()},
        folder / "open_clip_model.safetensors",
    )
    return f"local-dir:{folder}"


def _read(source):
    if isinstance(source, (str, os.PathLike)):
        root = Path(source).expanduser()
        path = root / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{root} has no config.json: give the folder of a transformers "
                "CLIPModel (CLIPModel.save_pretrained, or `hf download REPO "
                "--local-dir FOLDER`)."
            )
        config = json.loads(path.read_text(encoding="utf-8"))
        weights = root / "model.safetensors"
        if weights.is_file():
            from safetensors.torch import load_file

            state_dict = load_file(weights)
        elif (root / "pytorch_model.bin").is_file():
            state_dict = torch.load(
                root / "pytorch_model.bin", map_location="cpu", weights_only=True
            )
        else:
            raise FileNotFoundError(
                f"{root} has no model.safetensors or pytorch_model.bin."
            )
        processor = root / "preprocessor_config.json"
        preprocessor = (
            json.loads(processor.read_text(encoding="utf-8"))
            if processor.is_file()
            else {}
        )
        return config, state_dict, preprocessor
    if hasattr(source, "config") and hasattr(source, "state_dict"):
        return source.config.to_dict(), source.state_dict(), {}
    raise TypeError(
        "source must be the folder of a transformers CLIPModel or a CLIPModel; "
        f"got {type(source).__name__}."
    )


def _model_config(config):
    if config.get("model_type") != "clip":
        raise ValueError(
            f"model_type={config.get('model_type')!r}: only transformers' CLIPModel "
            "(model_type 'clip') converts; SigLIP and others are published for "
            "open_clip on the Hugging Face Hub (use their hf-hub: names)."
        )
    text, vision = config["text_config"], config["vision_config"]
    if text.get("vocab_size", 49408) != 49408:
        raise ValueError(
            f"text vocab_size={text['vocab_size']}: open_clip's tokenizer is CLIP's "
            "49408-token byte-pair encoding; this checkpoint uses another."
        )
    activations = {text.get("hidden_act"), vision.get("hidden_act")}
    if not activations <= {"quick_gelu", "gelu"} or len(activations) != 1:
        raise ValueError(f"unsupported activations {sorted(map(str, activations))}.")
    return {
        "embed_dim": config.get("projection_dim", 512),
        "quick_gelu": activations == {"quick_gelu"},
        "vision_cfg": {
            "image_size": vision.get("image_size", 224),
            "patch_size": vision.get("patch_size", 32),
            "width": vision["hidden_size"],
            "layers": vision["num_hidden_layers"],
            "head_width": vision["hidden_size"] // vision["num_attention_heads"],
            "mlp_ratio": vision["intermediate_size"] / vision["hidden_size"],
        },
        "text_cfg": {
            "context_length": text.get("max_position_embeddings", 77),
            "vocab_size": 49408,
            "width": text["hidden_size"],
            "heads": text["num_attention_heads"],
            "layers": text["num_hidden_layers"],
            "mlp_ratio": text["intermediate_size"] / text["hidden_size"],
        },
    }


def _preprocess_config(preprocessor):
    """Transformers' CLIPImageProcessor settings as open_clip's: resize the
    shortest side and centre-crop (what CLIPImageProcessor does).
    """
    config = {"resize_mode": "shortest"}
    if "image_mean" in preprocessor:
        config["mean"] = list(preprocessor["image_mean"])
    if "image_std" in preprocessor:
        config["std"] = list(preprocessor["image_std"])
    if preprocessor.get("resample") in _RESAMPLE:
        config["interpolation"] = _RESAMPLE[preprocessor["resample"]]
    if not preprocessor:
        # CLIPImageProcessor's defaults: OpenAI's mean and std, bicubic.
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        config.update(
            mean=list(OPENAI_DATASET_MEAN),
            std=list(OPENAI_DATASET_STD),
            interpolation="bicubic",
        )
    return config


def _convert_state_dict(hf, model_cfg):
    """Transformers' CLIPModel keys -> open_clip's CLIP keys."""
    hf = {k: v for k, v in hf.items() if not k.endswith("position_ids")}
    out = {}

    def take(key):
        try:
            return hf.pop(key)
        except KeyError:
            raise ValueError(
                f"the checkpoint has no {key!r}: not a CLIPModel"
            ) from None

    def tower(hf_prefix, prefix, layers):
        for i in range(layers):
            src, dst = (
                f"{hf_prefix}.encoder.layers.{i}",
                f"{prefix}transformer.resblocks.{i}",
            )
            for kind in ("weight", "bias"):
                out[f"{dst}.attn.in_proj_{kind}"] = torch.cat(
                    [take(f"{src}.self_attn.{p}_proj.{kind}") for p in "qkv"]
                )
                out[f"{dst}.attn.out_proj.{kind}"] = take(
                    f"{src}.self_attn.out_proj.{kind}"
                )
                out[f"{dst}.ln_1.{kind}"] = take(f"{src}.layer_norm1.{kind}")
                out[f"{dst}.ln_2.{kind}"] = take(f"{src}.layer_norm2.{kind}")
                out[f"{dst}.mlp.c_fc.{kind}"] = take(f"{src}.mlp.fc1.{kind}")
                out[f"{dst}.mlp.c_proj.{kind}"] = take(f"{src}.mlp.fc2.{kind}")

    vision = "vision_model"
    out["visual.class_embedding"] = take(f"{vision}.embeddings.class_embedding")
    out["visual.conv1.weight"] = take(f"{vision}.embeddings.patch_embedding.weight")
    out["visual.positional_embedding"] = take(
        f"{vision}.embeddings.position_embedding.weight"
    )
    for kind in ("weight", "bias"):
        # "pre_layrnorm" is transformers' spelling.
        out[f"visual.ln_pre.{kind}"] = take(f"{vision}.pre_layrnorm.{kind}")
        out[f"visual.ln_post.{kind}"] = take(f"{vision}.post_layernorm.{kind}")
    tower(vision, "visual.", model_cfg["vision_cfg"]["layers"])
    out["visual.proj"] = take("visual_projection.weight").T

    text = "text_model"
    out["token_embedding.weight"] = take(f"{text}.embeddings.token_embedding.weight")
    out["positional_embedding"] = take(f"{text}.embeddings.position_embedding.weight")
    for kind in ("weight", "bias"):
        out[f"ln_final.{kind}"] = take(f"{text}.final_layer_norm.{kind}")
    tower(text, "", model_cfg["text_cfg"]["layers"])
    out["text_projection"] = take("text_projection.weight").T
    out["logit_scale"] = take("logit_scale")
    if hf:
        raise ValueError(f"unexpected keys left after conversion: {sorted(hf)[:5]}")
    return out
