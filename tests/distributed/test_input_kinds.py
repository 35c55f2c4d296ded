"""Each input's kind is its own (a file, a URL, a cell of a Parquet column);
a column of path strings and Hugging Face cells holding only a path are read
from their paths; a column file that changed since its inputs were listed
gives error rows saying so."""

import os
from pathlib import Path

import numpy as np
import pytest

from sklearn_clip._images import FailedRead, ImageBytes
from sklearn_clip.distributed import embed_to_parquet, image_column_inputs

from .conftest import SHARD_SIZE

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]


def reference(featurizer, items):
    with pytest.warns(UserWarning, match="could not be read"):
        return featurizer.fit_transform(items)


def file_item(path):
    if os.path.exists(path):
        return ImageBytes(Path(path).read_bytes(), name=path)
    return FailedRead(path, FileNotFoundError("file does not exist"))


def test_inputs_mixing_files_and_column_cells(featurizer, images, tmp_path):
    data = [Path(p).read_bytes() for p in images[:6] if os.path.exists(p)]
    table = pa.table({"image": pa.array(data, type=pa.binary())})
    pq.write_table(table, tmp_path / "cells.parquet")
    cells = image_column_inputs([tmp_path / "cells.parquet"])
    # A file first, then cells, then files again: kinds decided per input.
    inputs = [images[10], *cells[:3], images[17], images[11], cells[4]]
    store = embed_to_parquet(featurizer, inputs, tmp_path / "store", shard_size=4)
    items = [
        file_item(images[10]),
        *[ImageBytes(d) for d in data[:3]],
        file_item(images[17]),
        file_item(images[11]),
        ImageBytes(data[4]),
    ]
    with pytest.warns(UserWarning, match="could not be read"):
        got = store.to_numpy(on_error="nan")
    np.testing.assert_allclose(got, reference(featurizer, items), atol=1e-6)
    errors = store.errors()
    assert [row for row, _, _ in errors] == [4]
    assert "file does not exist" in errors[0][2]


@pytest.mark.parametrize("relative", [False, True])
def test_a_column_of_path_strings_is_read_as_paths(
    featurizer, images, tmp_path, relative
):
    folder = Path(images[0]).parent
    cells = [os.path.relpath(p, folder) if relative else p for p in images]
    cells[3] = ""  # an empty cell
    table = pa.table({"path": pa.array(cells, type=pa.string())})
    # Relative paths are read from the Parquet file's folder.
    pq.write_table(table, folder / f"paths-{relative}.parquet", row_group_size=7)
    inputs = image_column_inputs([folder / f"paths-{relative}.parquet"], "path")
    store = embed_to_parquet(featurizer, inputs, tmp_path / "store", shard_size=8)
    items = [file_item(p) for p in images]
    items[3] = FailedRead("", ValueError("no image path in this cell"))
    with pytest.warns(UserWarning, match="could not be read"):
        got = store.to_numpy(on_error="nan")
    np.testing.assert_array_equal(got, reference(featurizer, items))
    errors = {row: why for row, _, why in store.errors()}
    assert sorted(errors) == [3, 5, 17]
    assert "no image path in this cell" in errors[3]
    assert "missing.png (the path in this cell): file does not exist" in errors[17]


def test_hugging_face_to_parquet_path_only_cells(featurizer, images, tmp_path):
    datasets = pytest.importorskip("datasets")
    kept = [p for p in images if os.path.exists(p)][:10]
    dataset = datasets.Dataset.from_dict({"image": kept}).cast_column(
        "image", datasets.Image()
    )
    dataset.to_parquet(str(tmp_path / "hf.parquet"))
    cells = pq.read_table(tmp_path / "hf.parquet").column("image").to_pylist()
    assert cells[0] == {"bytes": None, "path": kept[0]}  # what to_parquet writes
    inputs = image_column_inputs([tmp_path / "hf.parquet"])
    store = embed_to_parquet(featurizer, inputs, tmp_path / "store", shard_size=8)
    items = [file_item(p) for p in kept]
    with pytest.warns(UserWarning, match="could not be read"):
        got = store.to_numpy(on_error="nan")
    np.testing.assert_array_equal(got, reference(featurizer, items))
    assert [row for row, _, _ in store.errors()] == [5]  # the corrupt file


def test_a_column_of_another_type_is_refused_naming_it(tmp_path):
    pq.write_table(pa.table({"image": pa.array([1, 2])}), tmp_path / "ints.parquet")
    with pytest.raises(ValueError, match="'image' of .* is of type int64"):
        image_column_inputs([tmp_path / "ints.parquet"])


def test_a_column_file_that_shrank_gives_error_rows(featurizer, images, tmp_path):
    data = [Path(p).read_bytes() if os.path.exists(p) else None for p in images]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"image": pa.array(data, pa.binary())}), path)
    inputs = image_column_inputs([path])
    # Rewritten with fewer rows (in row groups) after the inputs were listed.
    pq.write_table(
        pa.table({"image": pa.array(data[:20], pa.binary())}),
        path,
        row_group_size=7,
    )
    store = embed_to_parquet(
        featurizer, inputs, tmp_path / "store", shard_size=SHARD_SIZE
    )
    errors = {row: why for row, _, why in store.errors()}
    assert sorted(errors) == [5, 17, *range(20, 29)]
    assert all(
        "past the end of" in errors[row] and "has 20 rows now" in errors[row]
        for row in range(20, 29)
    )
    assert "StopIteration" not in " ".join(errors.values())
    # The file gone: every row says why, none is lost.
    os.remove(path)
    store = embed_to_parquet(featurizer, inputs, tmp_path / "gone", shard_size=8)
    assert len(store.errors()) == len(inputs)
    assert all("No such file" in why for _, _, why in store.errors())
