import subprocess
import sys

import pytest
import torch

import sklearn_clip
from sklearn_clip import CLIPWeightsUnavailableError, load_clip, resolve_device
from sklearn_clip._torch_utils import autocast

from .conftest import TINY


def test_cache_returns_the_same_frozen_model():
    first = load_clip(**TINY)
    second = load_clip(**TINY)
    assert first.model is second.model
    assert not first.model.training
    assert not any(p.requires_grad for p in first.model.parameters())
    assert first.image_size == (64, 64)


def test_random_weights_warn():
    sklearn_clip.clear_clip_cache()
    with pytest.warns(UserWarning, match="random weights"):
        load_clip(**TINY)


def test_local_checkpoint_path_loads_those_weights(tmp_path):
    source = load_clip(**TINY).model
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    loaded = load_clip(TINY["model"], pretrained=path, device="cpu").model
    assert loaded is not source
    for (name, a), (_, b) in zip(
        source.state_dict().items(), loaded.state_dict().items()
    ):
        assert torch.equal(a, b), name


def test_offline_tag_error_names_model_tag_and_local_path_remedy():
    # conftest sets HF_HUB_OFFLINE=1, as on a machine without internet.
    with pytest.raises(CLIPWeightsUnavailableError) as info:
        load_clip("ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")
    message = str(info.value)
    assert "'ViT-B-32'" in message and "'laion2b_s34b_b79k'" in message
    assert "the file's path" in message and "pretrained=" in message


def test_unknown_model_and_unknown_tag_are_value_errors():
    with pytest.raises(ValueError, match="Unknown CLIP model 'ViT-Q-99'"):
        load_clip("ViT-Q-99", pretrained=None)
    with pytest.raises(ValueError, match="neither an existing checkpoint file"):
        load_clip(TINY["model"], pretrained="no-such-tag-or-file", device="cpu")


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_autocast_is_fp32_on_cpu_and_rejects_unknown_precision():
    cpu = torch.device("cpu")
    with autocast(cpu, "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast(cpu, "fp8")


def test_tiny_config_is_registered_in_fresh_worker_processes():
    # joblib/loky workers import the package, not the user's __main__.
    code = (
        "from joblib import Parallel, delayed\n"
        "import open_clip\n"
        "def f(_):\n"
        "    import sklearn_clip\n"
        "    return 'sklearn-clip-tiny' in open_clip.list_models()\n"
        "print(Parallel(n_jobs=2, backend='loky')(delayed(f)(i) for i in range(2)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[True, True]"


def test_random_weights_are_the_same_in_every_process():
    code = (
        "import torch, sklearn_clip\n"
        "torch.rand(7)\n"  # a different global RNG state than this process
        "m = sklearn_clip.load_clip('sklearn-clip-tiny', None, 'cpu').model\n"
        "print(float(sum(p.double().sum() for p in m.parameters())))\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    here = float(sum(p.double().sum() for p in load_clip(**TINY).model.parameters()))
    assert float(out.stdout) == here
