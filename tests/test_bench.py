import json

from sklearn_clip import bench

from .conftest import FEATURES, _require


def test_bench_prints_table_and_writes_json_and_plot(tmp_path, capsys):
    path = _require(FEATURES / "stanford_cars.npz")
    code = bench.main(["bench", str(path), "--shots", "1", "4", "--seeds", "2",
                       "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| zero-shot | 58.96 ± 0.00 | 58.96 ± 0.00 |" in printed
    records = json.loads((tmp_path / "stanford_cars.json").read_text())["records"]
    assert {r["method"] for r in records} == set(bench.METHODS)
    assert len(records) == 2 * 2 * len(bench.METHODS)
    scaled = {(r["shots"], r["seed"]): r["accuracy"] for r in records
              if r["method"] == "StandardScaler + LR"}
    # More shots help; different seeds draw different training sets.
    assert min(scaled[4, s] for s in (0, 1)) > max(scaled[1, s] for s in (0, 1)) + 0.1
    assert scaled[1, 0] != scaled[1, 1]
    assert (tmp_path / "stanford_cars.png").stat().st_size > 10_000


def test_bench_skips_text_methods_on_image_only_sets(tmp_path, capsys):
    path = _require(FEATURES / "oxford_pets.npz")
    bench.main([str(path), "--shots", "2", "--seeds", "1", "--methods", "zero-shot",
                "LR", "--out", str(tmp_path), "--no-progress"])
    records = json.loads((tmp_path / "oxford_pets.json").read_text())["records"]
    assert [r["method"] for r in records] == ["LR"]
