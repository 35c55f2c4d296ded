"""Offline machines: a pretrained tag fails in seconds with one clear error
when the hub is unreachable, and a checkpoint already in the local cache
loads without any network attempt."""

import logging
import socket
import time

import pytest
import torch
from open_clip import pretrained as open_clip_pretrained

from sklearn_clip import (
    CLIPWeightsUnavailableError,
    ZeroShotClassifier,
    clear_clip_cache,
)
from sklearn_clip._clip import load_clip

from .conftest import TINY

huggingface_hub = pytest.importorskip("huggingface_hub")

# A loopback port nothing listens on: connections are refused at once, as on
# a machine whose network blocks the hub. No traffic leaves the machine.
UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture
def online_looking_machine(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE unset (as on a user's machine), an empty Hugging Face
    cache, and a hub endpoint that refuses connections."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", UNREACHABLE)
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub")
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # open_clip's URL cache
    clear_clip_cache()
    yield tmp_path
    clear_clip_cache()


#: A bound no run on a loaded machine comes near (these take well under a
#: second idle); what fails fast is asserted by counting connections.
GENEROUS_SECONDS = 60


@pytest.fixture
def connections(monkeypatch):
    """The address of every socket connection this process attempts."""
    attempted = []
    connect = socket.socket.connect

    def recording(self, address):
        attempted.append(address)
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording)
    return attempted


def test_unreachable_hub_fails_fast_with_one_error(
    online_looking_machine, connections, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    started = time.perf_counter()
    with pytest.raises(CLIPWeightsUnavailableError) as error:
        ZeroShotClassifier().fit([[1.0, 0.0]] * 2, ["cat", "dog"])  # the defaults
    elapsed = time.perf_counter() - started
    # One probe of the hub and no retries (each retry backs off for seconds).
    assert connections == [("127.0.0.1", 9)]
    assert elapsed < GENEROUS_SECONDS, f"took {elapsed:.1f} s"
    message = str(error.value)
    assert "unreachable" in message and "HF_HUB_OFFLINE=1" in message
    assert "pretrained='/path/to/" in message
    # It says where the file is, not a call that would download into a cache.
    assert "https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message
    assert "create_model_and_transforms" not in message
    warnings_logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    printed = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(warnings_logged) <= 1 and len(printed) <= 1


def test_offline_flag_fails_at_once(online_looking_machine, connections, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(CLIPWeightsUnavailableError, match="HF_HUB_OFFLINE is set"):
        load_clip("ViT-B-32", "laion2b_s34b_b79k", device="cpu")
    assert connections == []  # not even a probe
    assert time.perf_counter() - started < GENEROUS_SECONDS


def test_a_cached_checkpoint_loads_without_network(
    online_looking_machine, connections, monkeypatch
):
    # A tag of the tiny model whose checkpoint sits in the local Hugging Face
    # cache, laid out as huggingface_hub stores downloads.
    weights = load_clip(**TINY).model.state_dict()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = online_looking_machine / "hub" / "models--sklearn-clip--tiny"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    torch.save(weights, snapshot / "open_clip_pytorch_model.bin")
    monkeypatch.setitem(
        open_clip_pretrained._PRETRAINED,
        TINY["model"],
        {"cached_test": {"hf_hub": "sklearn-clip/tiny/"}},
    )
    started = time.perf_counter()
    loaded = load_clip(TINY["model"], "cached_test", device="cpu").model
    assert connections == []
    assert time.perf_counter() - started < GENEROUS_SECONDS
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
