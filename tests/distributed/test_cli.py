"""sklearn-clip embed: folders, path lists and CSVs, errors, its own Dask cluster."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from sklearn_clip._cli import main as cli_main
from sklearn_clip.distributed import (
    EmbeddingStore,
)

from ..conftest import TINY

pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]
pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")


def test_cli_embeds_folders_and_path_lists(
    featurizer, images, expected, tmp_path, capsys
):
    folder = os.path.dirname(images[0])
    good = [path for path in images if os.path.exists(path)]
    listing = tmp_path / "list.txt"
    listing.write_text("# two images\n" + "\n".join(good[:2]) + "\n\n")
    table = tmp_path / "list.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerow([os.path.relpath(good[2], tmp_path), "x"])
    common = ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]
    out = tmp_path / "store"
    argv = ["embed", folder, str(listing), str(table), "-o", str(out)]
    assert cli_main([*argv, "--shard-size", "8", "--batch-size", "4", *common]) == 0
    assert "images in 5 shards at" in capsys.readouterr().out
    one = ["embed", good[0], "-o", str(tmp_path / "one"), *common]
    assert cli_main(one) == 0
    assert "1 image in 1 shard at" in capsys.readouterr().out
    store = EmbeddingStore(out)
    in_folder = sorted(str(path) for path in Path(folder).iterdir())
    csv_path = good[2]  # relative to the CSV, stored absolute
    assert list(store.inputs()) == in_folder + good[:2] + [csv_path]
    assert [row for row, _, _ in store.errors()] == [in_folder.index(images[5])]
    with pytest.warns(UserWarning, match="could not be read"):
        got = store.to_numpy(on_error="nan")
    by_path = dict(zip(images, expected))
    for row, path in enumerate(store.inputs()):
        if path in by_path:
            # Other batches than the reference's: equal up to float rounding.
            np.testing.assert_allclose(got[row], by_path[path], rtol=0, atol=1e-6)


@pytest.mark.distributed
def test_cli_starts_and_stops_its_own_dask_cluster(images, expected, tmp_path):
    distributed = pytest.importorskip("distributed")
    good = [path for i, path in enumerate(images) if i not in (5, 17)][:12]
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join(good))
    out = tmp_path / "store"
    argv = ["embed", str(listing), "-o", str(out), "--backend", "dask"]
    argv += ["--workers", "1", "--shard-size", "4", "--batch-size", "4"]
    argv += ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]
    environ = dict(os.environ)
    assert cli_main(argv) == 0
    assert dict(os.environ) == environ  # no OMP_NUM_THREADS=1 left behind
    by_path = dict(zip(images, expected))
    np.testing.assert_allclose(  # other batches: equal up to float rounding
        EmbeddingStore(out).to_numpy(),
        np.stack([by_path[p] for p in good]),
        rtol=0,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="No clients found"):
        distributed.default_client()  # the cluster it started is gone


def test_cli_lists_and_errors(featurizer, images, tmp_path, capsys):
    common = ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]
    table = tmp_path / "excel.csv"
    table.write_bytes("\ufeffpath,label\n".encode() + f"{images[0]},x\n".encode())
    assert cli_main(["embed", str(table), "-o", str(tmp_path / "s1"), *common]) == 0
    assert list(EmbeddingStore(tmp_path / "s1").inputs()) == [images[0]]

    table.write_text(f"path,label\n{images[0]},x\n,y\n")
    assert cli_main(["embed", str(table), "-o", str(tmp_path / "s2"), *common]) == 2
    assert "line 3: no path" in capsys.readouterr().err

    # URLs in a list are read through fsspec (file:// here: no network).
    listing = tmp_path / "urls.txt"
    listing.write_text(f"file://{images[0]}\n")
    assert cli_main(["embed", str(listing), "-o", str(tmp_path / "s3"), *common]) == 0
    assert list(EmbeddingStore(tmp_path / "s3").inputs()) == [f"file://{images[0]}"]
    capsys.readouterr()

    # A failing shard: one line on stderr, exit status 2, no traceback.
    (tmp_path / "s4" / "part-000000.parquet").mkdir(parents=True)
    (tmp_path / "s4" / "_manifest.json").write_text("{}")
    assert cli_main(["embed", images[0], "-o", str(tmp_path / "s4"), *common]) == 2
    assert "not a manifest of this package" in capsys.readouterr().err


def test_cli_embeds_webdataset_archives(images, tmp_path, capsys):
    from .conftest import make_tars

    tars, samples = make_tars(images, tmp_path / "tars")
    common = ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]
    out = tmp_path / "store"
    assert cli_main(["embed", *tars, "-o", str(out), *common]) == 0
    n_samples = sum(len(held) for held in samples)
    assert f"{n_samples} images in {len(tars)} shards" in capsys.readouterr().out
    assert EmbeddingStore(out).inputs()[-1] == f"{tars[-1]}#{samples[-1][-1][0]}"
