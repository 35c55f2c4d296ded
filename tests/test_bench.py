import json
import warnings
from contextlib import contextmanager

import numpy as np

from sklearn_clip import CLIPModelMismatchWarning
from sklearn_clip import _bench as bench
from sklearn_clip._cli import main
from sklearn_clip._datasets import load_features

from .conftest import FEATURES, _require


def test_bench_prints_table_and_writes_json_and_plot(tmp_path, capsys):
    path = _require(FEATURES / "stanford_cars.npz")
    code = main(
        [
            "bench",
            str(path),
            "--shots",
            "1",
            "4",
            "--seeds",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    data = load_features(path)
    zero_shot = 100 * np.mean(
        (data["X_test"] @ data["text_features"].T).argmax(axis=1) == data["y_test"]
    )
    assert f"| zero-shot | {zero_shot:.2f} ± 0.00 | {zero_shot:.2f} ± 0.00 |" in printed
    records = json.loads((tmp_path / "stanford_cars.json").read_text())["records"]
    assert {r["method"] for r in records} == set(bench.METHODS)
    assert len(records) == 2 * 2 * len(bench.METHODS)
    scaled = {
        (r["shots"], r["seed"]): r["accuracy"]
        for r in records
        if r["method"] == "StandardScaler + LR"
    }
    # More shots help; different seeds draw different training sets.
    assert min(scaled[4, s] for s in (0, 1)) > max(scaled[1, s] for s in (0, 1)) + 0.1
    assert scaled[1, 0] != scaled[1, 1]
    assert (tmp_path / "stanford_cars.png").stat().st_size > 10_000


def test_bench_skips_text_methods_on_image_only_sets(tmp_path, capsys):
    path = _require(FEATURES / "oxford_pets.npz")
    main(
        [
            "bench",
            str(path),
            "--shots",
            "2",
            "--seeds",
            "1",
            "--methods",
            "zero-shot",
            "LR",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    records = json.loads((tmp_path / "oxford_pets.json").read_text())["records"]
    assert [r["method"] for r in records] == ["LR"]


def test_bench_featurizes_an_image_folder_once(tmp_path, capsys):
    from .conftest import IMAGES

    folder = _require(IMAGES / "hymenoptera")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        bench_with_random_weights(folder, tmp_path)
    # Class text from random weights matches no image: the bench does not
    # report that as a model mismatch on every fit.
    assert not [w for w in record if issubclass(w.category, CLIPModelMismatchWarning)]
    printed = capsys.readouterr().out
    assert "best newer method" in printed
    records = json.loads((tmp_path / "hymenoptera.json").read_text())["records"]
    assert {r["method"] for r in records} == {"zero-shot", "GDA", "Tip-Adapter"}


def bench_with_random_weights(folder, tmp_path):
    main(
        [
            "bench",
            str(folder),
            "--model",
            "sklearn-clip-tiny",
            "--pretrained",
            "none",
            "--device",
            "cpu",
            "--shots",
            "2",
            "--seeds",
            "1",
            "--methods",
            "zero-shot",
            "GDA",
            "Tip-Adapter",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )


def test_bench_reads_a_csv_with_a_split_column(tmp_path):
    from .conftest import IMAGES

    root = _require(IMAGES / "hymenoptera")
    lines = (root / "labels.csv").read_text().splitlines()
    rows = [lines[0]]
    for split in ("train", "val"):  # 10 of each class in each split
        for label in ("0", "1"):
            rows += [
                r
                for r in lines[1:]
                if r.endswith(f",{split}") and r.split(",")[1] == label
            ][:10]
    csv_path = tmp_path / "subset.csv"
    csv_path.write_text(
        "\n".join(
            [rows[0]]
            + [f"{root / r.split(',')[0]},{r.split(',', 1)[1]}" for r in rows[1:]]
        )
    )
    data = bench.load_images(
        csv_path,
        model="sklearn-clip-tiny",
        pretrained=None,
        device="cpu",
        progress=False,
    )
    assert len(data["y_train"]) == 20 and len(data["y_test"]) == 20
    assert data["X_train"].shape[1] == 64
    # classname column -> text features, one row per class in label order
    assert sorted(set(data["y_train"])) == sorted(set(data["y_test"])) == ["0", "1"]
    assert data["text_features"].shape == (2, 64)


def test_cli_help_lists_commands_without_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from sklearn_clip._cli import build_parser\n"
        "print(build_parser().format_help())\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "bench" in out and "few-shot benchmark" in out
    assert "torch imported: False" in out


def test_cli_version_and_one_line_errors(capsys, tmp_path):
    import pytest

    from sklearn_clip import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out
    for argv in (["train"], ["foo.npz"], ["bench", "--shots"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "error:" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "missing.npz" in err[0]
        and err[0].startswith("sklearn-clip bench: error:")
    )


def test_cli_help_documents_every_option_and_lists_every_method():
    from sklearn_clip._cli import METHOD_NAMES, build_parser

    assert list(METHOD_NAMES) == list(bench.METHODS)
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("bench", "embed"):
        actions = commands[name]._actions
        undocumented = [a.dest for a in actions if not a.help]
        assert undocumented == [], name
        # Every option with a default says which.
        silent = [
            a.dest
            for a in actions
            if a.option_strings
            and a.default not in (None, False, "==SUPPRESS==")
            and "default:" not in a.help
        ]
        assert silent == [], name


def test_bench_refuses_empty_work_and_keeps_earlier_results(tmp_path, capsys):
    import pytest

    path = _require(FEATURES / "oxford_pets.npz")
    earlier = tmp_path / "oxford_pets.json"
    earlier.write_text("earlier results")
    for seeds in ("0", "-1"):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", str(path), "--seeds", seeds, "--out", str(tmp_path)])
        assert exit_info.value.code == 2
        assert "--seeds: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", str(path), "--shots", "0", "--out", str(tmp_path)])
    # Only text-based methods on a set without class text: nothing to measure.
    code = main(
        ["bench", str(path), "--methods", "zero-shot", "--out", str(tmp_path)]
        + ["--no-progress"]
    )
    assert code == 2
    assert "nothing was measured" in capsys.readouterr().err
    assert earlier.read_text() == "earlier results"
    assert not (tmp_path / "oxford_pets.png").exists()


def test_bench_names_the_inputs_it_accepts(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not data")
    for source in (notes, tmp_path / "missing.npz"):
        assert main(["bench", str(source), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert str(source) in err
        assert "features .npz" in err and "image folder" in err and "CSV" in err
    assert not (tmp_path / "out").exists()


def test_bench_runs_each_method_with_and_without_unlabelled_images(tmp_path, capsys):
    path = _require(FEATURES / "oxford_flowers.npz")
    args = ["bench", str(path), "--shots", "1", "--seeds", "1", "--no-progress"]
    args += ["--methods", "LR", "--unlabelled"]
    for protocol in ("test", "pool"):
        out = tmp_path / protocol
        assert main([*args, protocol, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "accuracy change (points) with" in printed
        records = json.loads((out / "oxford_flowers.json").read_text())["records"]
        accuracy = {r["method"]: r["accuracy"] for r in records}
        assert set(accuracy) == {"LR", "LR + unlabelled"}
        # One labelled image per class: the unlabelled images help a lot.
        assert accuracy["LR + unlabelled"] > accuracy["LR"] + 0.03, protocol
    assert "(transductive)" not in printed and "(inductive" in printed


def _tiny_features(path, n_classes=4, dim=16, seed=0):
    """A features file of well-separated classes (no shared data needed)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))

    def draw(per_class):
        y = np.repeat(np.arange(n_classes), per_class)
        X = centres[y] + 0.5 * rng.normal(size=(len(y), dim))
        return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y

    (X_train, y_train), (X_test, y_test) = draw(6), draw(10)
    np.savez(path, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test)
    return path


def test_bench_load_times_the_same_draw_beside_busy_torch_processes(
    tmp_path, capsys, monkeypatch
):
    """``bench --load 1``: one busy torch process runs during the second
    timing (and only then), the load table puts each method's idle and loaded
    fit side by side and CLIPClassifier's cost is printed for both."""
    import multiprocessing
    import re

    path = _tiny_features(tmp_path / "tiny.npz")
    seen = []
    real = bench.busy_torch_processes

    # Earlier tests in the session may leave children of their own (a Dask
    # cluster's processes): count only those started here.
    before = set(multiprocessing.active_children())

    def watched(n):
        with real(n):
            children = set(multiprocessing.active_children()) - before
            seen.append((n, [c.is_alive() for c in children]))
            yield

    monkeypatch.setattr(bench, "busy_torch_processes", contextmanager(watched))
    args = ["bench", str(path), "--shots", "2", "--seeds", "1", "--no-progress"]
    # Both of CLIPClassifier's image-only candidates, so its cost is compared.
    args += ["--methods", "GDA", "linear probe", "CLIPClassifier", "--load", "1"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert seen == [(1, [True])]
    assert not set(multiprocessing.active_children()) - before
    printed = capsys.readouterr().out
    records = json.loads((tmp_path / "out" / "tiny.json").read_text())["records"]
    idle = {r["method"]: r["fit_seconds"] for r in records if "load" not in r}
    loaded = {r["method"]: r["fit_seconds"] for r in records if r.get("load") == 1}
    methods = {"GDA", "linear probe", "CLIPClassifier"}
    assert set(idle) == set(loaded) == methods
    assert len(records) == 6
    assert "/ beside 1 busy torch processes" in printed
    for method in methods:
        a, b = idle[method], loaded[method]
        row = f"| {method} | {a:.2f} / {b:.2f} ({b / max(a, 1e-9):.1f}x) |"
        assert row in printed
    # The chooser's cost against its slowest candidate, idle then loaded.
    costs = re.findall(
        r"^\| 2 \| ([\d.]+) \| (GDA|linear probe) ([\d.]+) \| ([\d.]+)x \|$",
        printed,
        re.M,
    )
    expected = []
    for t in (idle, loaded):
        slowest = max(("GDA", "linear probe"), key=t.get)
        ratio = t["CLIPClassifier"] / t[slowest]
        expected.append(
            (f"{t['CLIPClassifier']:.2f}", slowest, f"{t[slowest]:.2f}", f"{ratio:.1f}")
        )
    assert costs == expected
    assert "CLIPClassifier's cost beside 1 busy torch processes" in printed
    assert re.search(r"of it beside 1 busy torch processes\) on .*\d+ cores", printed)
