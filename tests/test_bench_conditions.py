"""The bench's timings say the conditions they were measured in, and compare
only what was measured."""

import json

from sklearn_clip import _bench as bench
from sklearn_clip._cli import main
from sklearn_clip._clip_classifier import IMAGE_ONLY_CANDIDATES, TEXT_CANDIDATES

from .conftest import FEATURES, _require


def _records(seconds):
    return [
        dict(method=method, shots=2, seed=0, accuracy=0.5, fit_seconds=value)
        for method, value in seconds.items()
    ]


def test_chooser_cost_only_against_its_slowest_candidate_actually_timed():
    # --methods zero-shot GDA CLIPClassifier: zero-shot's 0.01 s is not the
    # slowest of the candidates CLIPClassifier fits; no ratio is printed.
    few = _records({"zero-shot": 0.01, "GDA": 0.05, "CLIPClassifier": 2.6})
    cost = bench.chooser_cost(few, [2], has_text=True)
    assert cost.startswith("Not compared: ")
    assert "Tip-Adapter-F" in cost and "x |" not in cost
    # Every candidate timed: the ratio is against the slowest of them.
    every = {name: 0.1 for name in TEXT_CANDIDATES} | {"Tip-Adapter-F": 1.3}
    cost = bench.chooser_cost(_records(every | {"CLIPClassifier": 2.6}), [2], True)
    assert "| 2 | 2.60 | Tip-Adapter-F 1.30 | 2.0x |" in cost
    image_only = {name: 0.2 for name in IMAGE_ONLY_CANDIDATES}
    cost = bench.chooser_cost(
        _records(image_only | {"CLIPClassifier": 0.5}), [2], has_text=False
    )
    assert "2.5x" in cost


def test_bench_prints_the_load_it_measured(tmp_path, capsys):
    path = _require(FEATURES / "oxford_pets.npz")
    argv = ["bench", str(path), "--shots", "1", "--seeds", "1", "--no-progress"]
    argv += ["--methods", "GDA", "CLIPClassifier", "--out", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    conditions = json.loads((tmp_path / "oxford_pets.json").read_text())["conditions"]
    measured = conditions["load"]["description"]
    assert measured.startswith("idle (" if conditions["load"]["idle"] else "busy: ")
    assert printed.startswith("sklearn-clip bench on ")
    assert "load average now " in printed.splitlines()[0]
    assert f"## oxford_pets: fit time (s), mean over seeds, {measured}\n" in printed
    assert f"## oxford_pets: CLIPClassifier's cost, {measured}\n" in printed
    assert "Not compared: " in printed  # the linear probe was not timed
    assert f"Load while timing: {measured}" in printed.splitlines()[-1]
    assert conditions["machine"] == bench.machine()
