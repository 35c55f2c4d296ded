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


def test_bench_featurizes_an_image_folder_once(tmp_path, capsys):
    from .conftest import IMAGES

    folder = _require(IMAGES / "hymenoptera")
    bench.main([str(folder), "--model", "sklearn-clip-tiny", "--pretrained", "none",
                "--device", "cpu", "--shots", "2", "--seeds", "1", "--methods",
                "zero-shot", "GDA", "Tip-Adapter", "--out", str(tmp_path),
                "--no-progress"])
    printed = capsys.readouterr().out
    assert "best newer method" in printed
    records = json.loads((tmp_path / "hymenoptera.json").read_text())["records"]
    assert {r["method"] for r in records} == {"zero-shot", "GDA", "Tip-Adapter"}


def test_bench_reads_a_csv_with_a_split_column(tmp_path):
    from .conftest import IMAGES

    root = _require(IMAGES / "hymenoptera")
    lines = (root / "labels.csv").read_text().splitlines()
    rows = [lines[0]]
    for split in ("train", "val"):  # 10 of each class in each split
        for label in ("0", "1"):
            rows += [r for r in lines[1:] if r.endswith(f",{split}")
                     and r.split(",")[1] == label][:10]
    csv_path = tmp_path / "subset.csv"
    csv_path.write_text("\n".join(
        [rows[0]] + [f"{root / r.split(',')[0]},{r.split(',', 1)[1]}" for r in rows[1:]]
    ))
    data = bench.load_images(csv_path, model="sklearn-clip-tiny", pretrained=None,
                             device="cpu", progress=False)
    assert len(data["y_train"]) == 20 and len(data["y_test"]) == 20
    assert data["X_train"].shape[1] == 64
    # classname column -> text features, one row per class in label order
    assert sorted(set(data["y_train"])) == sorted(set(data["y_test"])) == ["0", "1"]
    assert data["text_features"].shape == (2, 64)
