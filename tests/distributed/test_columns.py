"""Images in a column of Parquet files (encoded bytes, or Hugging Face Image
structs) as the inputs of a job."""

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


@pytest.fixture(scope="module")
def parquet_images(images, tmp_path_factory):
    """One Parquet file, row groups of 7 rows: a binary column and a Hugging
    Face Image column of the same images (the missing file: an empty cell)."""
    data = [Path(p).read_bytes() if os.path.exists(p) else None for p in images]
    table = pa.table(
        {
            "image": pa.array(data, type=pa.binary()),
            "hf": pa.array(
                [{"bytes": d, "path": f"{i}.jpg"} for i, d in enumerate(data)],
                type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "label": pa.array([i % 3 for i in range(len(data))]),
        }
    )
    path = tmp_path_factory.mktemp("parquet") / "train-00000.parquet"
    pq.write_table(table, path, row_group_size=7)
    return str(path), data


@pytest.mark.parametrize("column", ["image", "hf"])
def test_a_column_of_images_embeds_bitwise(
    featurizer, parquet_images, tmp_path, column
):
    path, data = parquet_images
    inputs = image_column_inputs([path], column=column)
    assert inputs[:2] == [f"{path}#{column}[0]", f"{path}#{column}[1]"]
    store = embed_to_parquet(
        featurizer, inputs, tmp_path / "store", shard_size=SHARD_SIZE
    )
    items = [
        ImageBytes(d, name=i) if d else FailedRead(i, ValueError("empty"))
        for i, d in zip(inputs, data)
    ]
    with pytest.warns(UserWarning, match="could not be read"):
        expected = featurizer.fit_transform(items)
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)
    errors = {row: why for row, _, why in store.errors()}
    assert sorted(errors) == [5, 17]
    if column == "image":
        assert "no image bytes in this cell" in errors[17]
    else:  # a Hugging Face cell without bytes is read from its path
        assert "17.jpg (the path in this cell): file does not exist" in errors[17]
    assert list(store.inputs()) == inputs


def test_a_missing_column_is_named(parquet_images):
    path, _ = parquet_images
    with pytest.raises(ValueError, match=r"no column 'img'; its columns: \['image'"):
        image_column_inputs([path], column="img")


def test_cli_embeds_a_parquet_column(parquet_images, tmp_path, capsys):
    from sklearn_clip._cli import main as cli_main
    from sklearn_clip.distributed import EmbeddingStore

    from ..conftest import TINY

    path, data = parquet_images
    common = ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]
    out = tmp_path / "store"
    assert cli_main(["embed", path, "--column", "hf", "-o", str(out), *common]) == 0
    assert f"{len(data)} images in 1 shard" in capsys.readouterr().out
    assert EmbeddingStore(out).inputs()[3] == f"{path}#hf[3]"


def test_a_saved_hugging_face_dataset_embeds_bitwise(featurizer, images, tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    kept = [p for p in images if os.path.exists(p) and not p.endswith("corrupt.jpg")]
    dataset = datasets.Dataset.from_dict(
        {"image": [Image.open(p) for p in kept[:12]], "label": list(range(12))}
    ).cast_column("image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    inputs = image_column_inputs([tmp_path / "saved"])
    assert len(inputs) == 12 and inputs[0].endswith(".arrow#image[0]")
    store = embed_to_parquet(featurizer, inputs, tmp_path / "store", shard_size=8)
    saved = datasets.load_from_disk(str(tmp_path / "saved"))
    cells = saved.cast_column("image", datasets.Image(decode=False))["image"]
    stored = [cell["bytes"] for cell in cells]
    assert all(stored)  # the saved dataset holds the encoded files
    expected = featurizer.fit_transform(
        [ImageBytes(data, name=i) for data, i in zip(stored, inputs)]
    )
    np.testing.assert_array_equal(store.to_numpy(), expected)
