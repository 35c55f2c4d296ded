"""Every CLIP family, loaded the way users hold it: by tag, by checkpoint
file, by ``hf-hub:`` from the local Hugging Face cache and by ``local-dir:``.

Tiny random-weight configurations shrink the real families' towers (timm's
``test_vit`` and ``test_convnext`` trunks, one text layer) and keep what
matters to the loader: custom text towers, SigLIP's logit bias, and each
family's published preprocessing, registered as a tag of the tiny model.
Nothing here touches the network (conftest sets HF_HUB_OFFLINE=1).
"""

import json
import sys
import time

import numpy as np
import open_clip
import pytest
import torch
from open_clip import pretrained as open_clip_pretrained
from PIL import Image

from sklearn_clip import (
    CLIPFeaturizer,
    CLIPWeightsUnavailableError,
    ZeroShotClassifier,
    ZeroShotLogits,
    clear_clip_cache,
    encode_class_names,
    load_clip,
)
from sklearn_clip._clip import embedding_dim
from sklearn_clip._featurizer import embedding_key
from sklearn_clip._transformers import convert_transformers_clip

huggingface_hub = pytest.importorskip("huggingface_hub")

TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}

#: family -> (tiny config, the real model whose published tag it copies)
FAMILIES = {
    "sigmoid": (
        {
            "embed_dim": 32,
            "init_logit_bias": -10,
            "custom_text": True,
            "vision_cfg": {
                "image_size": 64,
                "timm_model_name": "test_vit",
                "timm_pool": "avg",
                "timm_proj": "linear",
            },
            "text_cfg": {
                **TEXT,
                "no_causal_mask": True,
                "proj_bias": True,
                "pool_type": "last",
                "norm_kwargs": {"eps": 1e-6},
            },
        },
        ("ViT-B-16-SigLIP", "webli"),
    ),
    "mobileclip": (
        {
            "embed_dim": 32,
            "custom_text": True,
            "vision_cfg": {
                "image_size": 64,
                "timm_model_name": "test_convnext",
                "timm_pool": "avg",
                "timm_proj": "linear",
            },
            "text_cfg": {**TEXT, "no_causal_mask": True},
        },
        ("MobileCLIP-S1", "datacompdr"),
    ),
    "eva": (
        {
            "embed_dim": 32,
            "custom_text": True,
            "vision_cfg": {
                "image_size": 64,
                "timm_model_name": "test_vit",
                "timm_pool": "token",
                "timm_proj": "linear",
            },
            "text_cfg": TEXT,
        },
        ("EVA02-B-16", "merged2b_s8b_b131k"),
    ),
    "convnext": (
        {
            "embed_dim": 32,
            "vision_cfg": {
                "image_size": 64,
                "timm_model_name": "test_convnext",
                "timm_pool": "",
                "timm_proj": "linear",
            },
            "text_cfg": TEXT,
        },
        ("convnext_base", "laion400m_s13b_b51k"),
    ),
    "clip": (
        json.loads(
            (
                __import__("pathlib").Path(open_clip.__file__).parent
                / "model_configs"
                / "ViT-B-32.json"
            ).read_text()
        ),
        ("ViT-B-32", "openai"),
    ),
}
# The CLIP family: ViT-B-32's own config, shrunk.
FAMILIES["clip"][0].update(embed_dim=32)
FAMILIES["clip"][0]["vision_cfg"].update(
    image_size=64, layers=1, width=32, patch_size=16, head_width=16
)
FAMILIES["clip"][0]["text_cfg"] = dict(TEXT)

PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
TAG = "published"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def name_of(family):
    return f"test-tiny-{family}"


def published(model, tag):
    cfg = open_clip.get_pretrained_cfg(model, tag)
    return {key: cfg[key] for key in PREPROCESS_KEYS if key in cfg}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """Register the tiny configs, each with one tag carrying its family's
    published preprocessing, whose weights live in the Hugging Face cache."""
    folder = tmp_path_factory.mktemp("configs")
    for family, (config, _) in FAMILIES.items():
        (folder / f"{name_of(family)}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    with pytest.MonkeyPatch.context() as patch:
        for family, (_, real) in FAMILIES.items():
            patch.setitem(
                open_clip_pretrained._PRETRAINED,
                name_of(family),
                {TAG: {"hf_hub": f"test-org/{family}/", **published(*real)}},
            )
        yield


@pytest.fixture
def hub(monkeypatch, tmp_path, families):
    """An empty local Hugging Face cache in tmp_path; offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub")
    )
    clear_clip_cache()
    yield tmp_path / "hub"
    clear_clip_cache()


def write_repo(cache, repo, files):
    """Lay ``files`` (name -> callable(path) writing it) out as
    huggingface_hub stores a download of ``repo``."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    for name, write in files.items():
        write(snapshot / name)
    return snapshot


def random_weights(model):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return open_clip.create_model(model).state_dict()


def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8))


def reference_image_embedding(model, pretrained):
    """open_clip's own path: create_model_and_transforms, encode_image."""
    clip_model, _, preprocess = open_clip.create_model_and_transforms(
        model, pretrained=pretrained
    )
    clip_model.eval()
    with torch.no_grad():
        return clip_model.encode_image(preprocess(image())[None]).numpy()[0], (
            clip_model
        )


def published_folder(directory, family, weights):
    """An open_clip folder as published on the Hub: config and weights."""
    model = name_of(family)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": FAMILIES[family][0],
        "preprocess_cfg": published(*FAMILIES[family][1]),
    }
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    torch.save(weights, directory / "open_clip_pytorch_model.bin")
    return model


def featurize(model, pretrained, **params):
    featurizer = CLIPFeaturizer(
        model, pretrained, device="cpu", normalize=False, num_workers=0, **params
    )
    return featurizer.fit_transform([image()])[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_image_embeddings_equal_open_clip_by_tag_file_hub_and_folder(
    family, hub, tmp_path
):
    model = name_of(family)
    weights = random_weights(model)
    write_repo(
        hub,
        f"test-org/{family}",
        {"open_clip_pytorch_model.bin": lambda path: torch.save(weights, path)},
    )
    expected, reference = reference_image_embedding(model, TAG)
    # The family's published preprocessing reached open_clip's transform.
    assert tuple(reference.visual.preprocess_cfg["mean"]) == tuple(
        published(*FAMILIES[family][1]).get("mean", open_clip.OPENAI_DATASET_MEAN)
    )

    torch.save(weights, tmp_path / "weights.pt")
    folder = tmp_path / "folder"
    published_folder(folder, family, weights)
    write_repo(
        hub,
        f"test-org/{family}-published",
        {
            "open_clip_config.json": lambda path: path.write_text(
                (folder / "open_clip_config.json").read_text()
            ),
            "open_clip_pytorch_model.bin": lambda path: torch.save(weights, path),
        },
    )
    sources = {
        "tag": (model, TAG),
        "file": (model, tmp_path / "weights.pt"),
        "hf-hub": (f"hf-hub:test-org/{family}-published", "laion2b_s34b_b79k"),
        "local-dir": (f"local-dir:{folder}", "laion2b_s34b_b79k"),
    }
    for source, (name, pretrained) in sources.items():
        got = featurize(name, pretrained)
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=source)
        assert embedding_dim(name) == 32

    # The text side is open_clip's tokenizer path, for a hub model too.
    tokenizer = open_clip.get_tokenizer(model)
    with torch.no_grad():
        text = reference.encode_text(tokenizer(["a photo of a cat."]))
    text = torch.nn.functional.normalize(text, dim=-1).numpy()
    for name, pretrained in (sources["tag"], sources["hf-hub"]):
        got = encode_class_names(
            ["cat"], model=name, pretrained=pretrained, device="cpu"
        )
        np.testing.assert_allclose(got, text, atol=1e-5)


def test_siglip_logits_are_the_models_own_and_sigmoid_is_offered(hub):
    family, model = "sigmoid", name_of("sigmoid")
    weights = random_weights(model)
    weights["logit_bias"] = torch.tensor([-3.5])
    write_repo(
        hub,
        f"test-org/{family}",
        {"open_clip_pytorch_model.bin": lambda path: torch.save(weights, path)},
    )
    clip = load_clip(model, TAG, device="cpu")
    assert float(clip.model.logit_bias) == -3.5
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 32)).astype(np.float32)
    y = ["ant", "bee", "cat"]
    names = np.array(y)
    with torch.no_grad():
        text = clip.model.encode_text(clip.tokenizer([f"a photo of a {n}." for n in y]))
        image_ = torch.nn.functional.normalize(torch.from_numpy(X), dim=-1)
        text = torch.nn.functional.normalize(text, dim=-1)
        own = clip.model.logit_scale.exp() * image_ @ text.T + clip.model.logit_bias
    own = own.numpy()

    # y has fewer rows than two per class: no text-mismatch check.
    clf = ZeroShotClassifier(model, TAG, device="cpu").fit(X[:3], y)
    assert clf.logit_bias_ == -3.5
    np.testing.assert_allclose(clf.decision_function(X), own, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1)  # softmax
    assert (clf.predict(X) == names[own.argmax(axis=1)]).all()

    sigmoid = ZeroShotClassifier(model, TAG, probability="sigmoid", device="cpu")
    sigmoid.fit(X[:3], y)
    np.testing.assert_allclose(
        sigmoid.predict_proba(X), 1 / (1 + np.exp(-own)), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        sigmoid.predict_log_proba(X), np.log(sigmoid.predict_proba(X)), rtol=1e-6
    )
    logits = ZeroShotLogits(model, TAG, append=False, device="cpu").fit(X[:3], y)
    np.testing.assert_allclose(logits.transform(X), own, rtol=1e-5, atol=1e-5)

    # Precomputed text: the bias is a parameter, the assumed scale warns.
    with pytest.warns(UserWarning, match="sigmoid-trained"):
        ZeroShotClassifier(model, TAG, text_features=text.numpy()).fit(X[:3], y)
    given = ZeroShotClassifier(
        model,
        TAG,
        text_features=text.numpy(),
        logit_scale=float(clip.model.logit_scale.exp()),
        logit_bias=-3.5,
    ).fit(X[:3], y)
    np.testing.assert_allclose(given.decision_function(X), own, rtol=1e-5, atol=1e-5)
    with pytest.warns(UserWarning, match="meant for sigmoid-trained"):
        ZeroShotClassifier(text_features=np.eye(3, 32), probability="sigmoid").fit(
            np.eye(3, 32), y
        )


@pytest.fixture
def conflicting(hub, monkeypatch):
    """A tiny model with two tags preprocessed differently."""
    model = name_of("eva")
    monkeypatch.setitem(
        open_clip_pretrained._PRETRAINED,
        model,
        {
            "openai_like": {"hf_hub": "test-org/a/"},
            "siglip_like": {
                "hf_hub": "test-org/b/",
                **published("ViT-B-16-SigLIP", "webli"),
            },
        },
    )
    return model, hub


def test_a_file_of_a_model_with_conflicting_tags_needs_an_explicit_choice(
    conflicting, tmp_path
):
    model, hub = conflicting
    weights = random_weights(model)
    path = tmp_path / "weights.pt"
    torch.save(weights, path)
    with pytest.raises(ValueError, match="different image preprocessing") as error:
        featurize(model, path)
    assert "openai_like" in str(error.value) and "preprocess=" in str(error.value)

    write_repo(
        hub,
        "test-org/b",
        {"open_clip_pytorch_model.bin": lambda p: torch.save(weights, p)},
    )
    expected, _ = reference_image_embedding(model, "siglip_like")
    by_tag = featurize(model, path, preprocess="siglip_like")
    np.testing.assert_allclose(by_tag, expected, atol=1e-5)
    by_values = featurize(
        model,
        path,
        preprocess={
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "interpolation": "bicubic",
            "resize_mode": "squash",
        },
    )
    np.testing.assert_allclose(by_values, expected, atol=1e-5)
    # Different preprocessing never shares an embedding-cache entry.
    keys = {
        embedding_key(
            CLIPFeaturizer(model, path, preprocess=choice, device="cpu"),
            load_clip(model, path, "cpu", preprocess=choice),
        )
        for choice in ("siglip_like", "openai_like")
    }
    assert len(keys) == 2
    # Text needs no preprocessing: class text from the file still works.
    assert encode_class_names(["a"], model=model, pretrained=path, device="cpu").shape
    with pytest.raises(ValueError, match="not a pretrained tag"):
        featurize(model, path, preprocess="no-such-tag")
    with pytest.raises(ValueError, match="'mean' and 'std' required"):
        featurize(model, path, preprocess={"mean": [0.5] * 3})


def test_image_work_needs_no_tokenizer_and_text_fails_clearly_offline(
    hub, tmp_path, monkeypatch
):
    # A SigLIP-like model whose tokenizer lives on the Hub, not in the cache.
    config = json.loads(json.dumps(FAMILIES["sigmoid"][0]))
    config["text_cfg"]["hf_tokenizer_name"] = "test-org/no-such-tokenizer"
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "test-tiny-hf-tokenizer.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    model = "test-tiny-hf-tokenizer"
    path = tmp_path / "weights.pt"
    torch.save(random_weights(model), path)
    monkeypatch.setitem(
        open_clip_pretrained._PRETRAINED,
        model,
        {TAG: {"hf_hub": "x/", **published("ViT-B-16-SigLIP", "webli")}},
    )
    assert featurize(model, path).shape == (32,)  # no tokenizer built

    started = time.perf_counter()
    with pytest.raises(CLIPWeightsUnavailableError, match="HF_HUB_OFFLINE") as error:
        ZeroShotClassifier(model, path, device="cpu").fit(np.eye(2, 32), ["a", "b"])
    assert time.perf_counter() - started < 10
    assert "test-org/no-such-tokenizer" in str(error.value)
    assert "Image embeddings need no tokenizer" in str(error.value)

    clear_clip_cache()
    monkeypatch.setitem(sys.modules, "transformers", None)  # not installed
    with pytest.raises(ImportError, match=r"sklearn-clip\[transformers\]"):
        encode_class_names(["a"], model=model, pretrained=path, device="cpu")


@pytest.mark.parametrize(
    "make",
    [
        lambda m: CLIPFeaturizer(m, device="cpu").fit_transform([image()]),
        lambda m: CLIPFeaturizer(m, device="cpu").fit(),
        lambda m: ZeroShotClassifier(m, device="cpu").fit(np.eye(2), ["a", "b"]),
        lambda m: encode_class_names(["a"], model=m, device="cpu"),
    ],
    ids=["featurizer", "featurizer-fit", "zero-shot", "encode_class_names"],
)
def test_hub_models_missing_offline_fail_fast_with_one_error(make, hub):
    started = time.perf_counter()
    with pytest.raises(CLIPWeightsUnavailableError) as error:
        make("hf-hub:test-org/not-downloaded")
    assert time.perf_counter() - started < 10
    message = str(error.value)
    assert "HF_HUB_OFFLINE" in message and "hf-hub:test-org/not-downloaded" in message
    assert "local-dir:" in message


def test_hub_repo_without_weights_is_an_error_not_random_weights(hub, tmp_path):
    config = {"model_cfg": FAMILIES["clip"][0]}
    write_repo(
        hub,
        "test-org/config-only",
        {"open_clip_config.json": lambda p: p.write_text(json.dumps(config))},
    )
    with pytest.raises(CLIPWeightsUnavailableError, match="weights"):
        load_clip("hf-hub:test-org/config-only", device="cpu")
    with pytest.raises(FileNotFoundError, match="no open_clip_config.json"):
        load_clip(f"local-dir:{tmp_path}", device="cpu")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_clip(f"local-dir:{tmp_path / 'missing'}", device="cpu")


def test_unknown_model_suggests_the_close_name():
    with pytest.raises(ValueError, match="Did you mean 'ViT-B-32'"):
        load_clip("ViT-B32", pretrained=None)
    with pytest.raises(ValueError, match="Did you mean 'openai'"):
        load_clip("ViT-B-32", pretrained="opneai")


def test_command_line_weights_error_speaks_command_line(tmp_path, capsys):
    from sklearn_clip._cli import main

    image().save(tmp_path / "a.png")
    code = main(
        ["embed", str(tmp_path / "a.png"), "--output", str(tmp_path / "out")]
        + ["--backend", "local", "--workers", "1", "--no-progress"]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "--pretrained PATH" in error and "--pretrained none" in error
    assert "pretrained='" not in error and "HF_HUB_OFFLINE" in error


def test_command_line_preprocess_reaches_the_featurizer(hub, tmp_path, monkeypatch):
    from sklearn_clip import _cli

    seen = {}

    def record(featurizer, paths, output, **kwargs):
        seen["preprocess"] = featurizer.preprocess
        raise ValueError("stop here")

    monkeypatch.setattr("sklearn_clip.distributed.embed_to_parquet", record)
    image().save(tmp_path / "a.png")
    for given, expected in [
        ("webli", "webli"),
        ('{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}', {"mean": [0.5] * 3}),
    ]:
        args = ["embed", str(tmp_path / "a.png"), "--output", str(tmp_path / "o")]
        assert _cli.main(args + ["--preprocess", given]) == 2
        if isinstance(expected, dict):
            assert seen["preprocess"]["mean"] == expected["mean"]
        else:
            assert seen["preprocess"] == expected


def test_transformers_clip_converts_to_an_open_clip_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=2,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=2,
            image_size=32,
            patch_size=16,
        ),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hf_model = transformers.CLIPModel(config).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    (tmp_path / "hf" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": mean, "image_std": std, "resample": 2})
    )
    name = convert_transformers_clip(tmp_path / "hf", tmp_path / "open_clip")
    assert name == f"local-dir:{tmp_path / 'open_clip'}"
    clip = load_clip(name, device="cpu")
    assert clip.preprocess_config["mean"] == tuple(mean)
    assert clip.preprocess_config["interpolation"] == "bilinear"

    pixels = clip.preprocess(image())[None]
    ids = clip.tokenizer(["a photo of a cat.", "a photo of a dog."])
    with torch.no_grad():
        image_hf = hf_model.get_image_features(pixel_values=pixels)
        text_hf = hf_model.get_text_features(input_ids=ids)
    image_hf = getattr(image_hf, "pooler_output", image_hf).numpy()
    text_hf = getattr(text_hf, "pooler_output", text_hf)
    got = featurize(name, "laion2b_s34b_b79k")
    np.testing.assert_allclose(got, image_hf[0], atol=1e-5)
    text = encode_class_names(["cat", "dog"], model=name, device="cpu")
    expected = torch.nn.functional.normalize(text_hf, dim=-1).numpy()
    np.testing.assert_allclose(text, expected, atol=1e-5)
    # The same from the model object, and clear errors for what does not convert.
    again = convert_transformers_clip(hf_model, tmp_path / "from-object")
    assert (tmp_path / "from-object" / "open_clip_model.safetensors").is_file()
    assert again.startswith("local-dir:")
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert_transformers_clip(tmp_path, tmp_path / "x")


@pytest.mark.parametrize(
    "head",
    ["TipAdapterClassifier", "CLIPAdapterClassifier", "ZSLinearProbeClassifier"]
    + ["GDAClassifier"],
)
def test_few_shot_heads_take_a_sigmoid_models_scale(head, hub):
    import warnings

    import sklearn_clip

    from .conftest import blobs

    # Text from a sigmoid-trained model: the heads use its learned scale.
    family, model = "sigmoid", name_of("sigmoid")
    weights = random_weights(model)
    weights["logit_scale"] = torch.tensor(np.log(117.3), dtype=torch.float32)
    write_repo(
        hub,
        f"test-org/{family}",
        {"open_clip_pytorch_model.bin": lambda path: torch.save(weights, path)},
    )
    X, y = blobs(60, n_classes=3, n_features=32)
    labels = np.array(["ant", "bee", "cat"])[y]
    extra = {"discriminant_weight": 0.5} if head == "GDAClassifier" else {}
    Head = getattr(sklearn_clip, head)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn_clip.CLIPModelMismatchWarning)
        fitted = Head(model, TAG, device="cpu", **extra).fit(X, labels)
    assert fitted.logit_scale_ == pytest.approx(117.3, rel=1e-5)
    # With text that describes the classes, SigLIP's scale trains as well as
    # CLIP's 100.
    centres = np.stack([X[y == k].mean(axis=0) for k in range(3)])
    scores = [
        Head(text_features=centres, logit_scale=scale, device="cpu", **extra)
        .fit(X, labels)
        .score(X, labels)
        for scale in (100.0, 117.3)
    ]
    assert min(scores) > 0.9 and abs(scores[0] - scores[1]) < 0.05


def test_without_the_offline_flag_an_unreachable_hub_fails_fast(
    hub, tmp_path, monkeypatch
):
    # As on a user's machine: HF_HUB_OFFLINE unset, the hub refusing
    # connections (a loopback port nothing listens on).
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    config = json.loads(json.dumps(FAMILIES["sigmoid"][0]))
    config["text_cfg"]["hf_tokenizer_name"] = "test-org/tokenizer-elsewhere"
    (tmp_path / "test-tiny-remote-tokenizer.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "test-tiny-remote-tokenizer.json")
    folder = tmp_path / "folder"
    published_folder(folder, "sigmoid", random_weights(name_of("sigmoid")))
    with pytest.warns(UserWarning, match="random weights"):
        load_clip("test-tiny-remote-tokenizer", None, "cpu")
    for make, error in [
        (lambda: load_clip("hf-hub:test-org/absent", device="cpu"), "unreachable"),
        (
            lambda: encode_class_names(
                ["a"], model="test-tiny-remote-tokenizer", pretrained=None
            ),
            "unreachable",
        ),
        # Image embeddings of a local-dir: model need no network at all.
        (lambda: featurize(f"local-dir:{folder}", None), None),
    ]:
        started = time.perf_counter()
        if error is None:
            assert make().shape == (32,)
            continue
        with pytest.raises(CLIPWeightsUnavailableError, match=error):
            make()
        assert time.perf_counter() - started < 10


def test_preprocess_is_one_parameter_from_pipeline_to_manifest():
    from sklearn_clip import make_clip_pipeline
    from sklearn_clip._cli import build_parser
    from sklearn_clip._featurizer import embedding_parameters

    choice = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "resize_mode": "squash"}
    pipe = make_clip_pipeline(ZeroShotClassifier(), preprocess=choice)
    assert pipe.named_steps["clip"].preprocess == choice
    # A job's manifest records it as JSON gives it back; the default is absent
    # (manifests written before the parameter existed stay valid).
    recorded = embedding_parameters(pipe.named_steps["clip"])["preprocess"]
    assert recorded == json.loads(json.dumps(recorded))
    assert recorded["mean"] == [0.5] * 3 and recorded["interpolation"] == "bicubic"
    assert "preprocess" not in embedding_parameters(CLIPFeaturizer())
    for command in (["bench", "x.npz"], ["embed", "x", "-o", "y"]):
        args = build_parser().parse_args([*command, "--preprocess", "webli"])
        assert args.preprocess == "webli"
    with pytest.raises(ValueError, match="interpolation"):
        load_clip(
            "sklearn-clip-tiny",
            None,
            "cpu",
            preprocess={**choice, "interpolation": "x"},
        )


def test_every_open_clip_architecture_gets_its_published_preprocessing_by_file(
    tmp_path,
):
    from types import SimpleNamespace

    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    from sklearn_clip._clip import resolve_preprocess

    path = tmp_path / "weights.pt"
    path.write_bytes(b"")
    conflicting = []
    for model in open_clip.list_models():
        tags = open_clip.list_pretrained_tags_by_model(model)
        if not tags:
            continue
        # What open_clip gives each tag (create_model merges the tag's config).
        by_tag = {
            tag: merge_preprocess_dict(
                PreprocessCfg(), open_clip.get_pretrained_cfg(model, tag)
            )
            for tag in tags
        }
        fake = SimpleNamespace(
            visual=SimpleNamespace(preprocess_cfg=dict(by_tag[tags[0]]))
        )
        fake.visual.preprocess_cfg.update(mean=(9, 9, 9))  # not the answer
        distinct = {
            tuple(tuple(np.atleast_1d(cfg[key])) for key in PREPROCESS_KEYS)
            for cfg in by_tag.values()
        }
        if len(distinct) > 1:
            with pytest.raises(ValueError, match="different image preprocessing"):
                resolve_preprocess(model, path, None, fake)
            conflicting.append(model)
            continue
        got = resolve_preprocess(model, path, None, fake)
        assert distinct == {
            tuple(tuple(np.atleast_1d(got[key])) for key in PREPROCESS_KEYS)
        }, model
    # open_clip 3.3: ViT-H-14 (dfn5b squashes), ViT-H-14-quickgelu, ViT-L-14.
    assert "ViT-B-16-SigLIP" not in conflicting and len(conflicting) < 10
