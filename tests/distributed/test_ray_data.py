"""CLIPBatchEmbedder: the embedding step of Ray Data pipelines."""

import numpy as np
import pytest

from sklearn_clip import CLIPFeaturizer
from sklearn_clip._embedding_cache import content_key
from sklearn_clip.distributed import (
    CLIPBatchEmbedder,
)

from ..conftest import TINY
from .conftest import BATCH_SIZE, N_IMAGES

pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]
pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")


@pytest.mark.distributed
def test_ray_data_batch_embedder(ray_cluster, featurizer, images, expected):
    ray_data = pytest.importorskip("ray.data")
    dataset = ray_data.from_items([{"path": p, "row": i} for i, p in enumerate(images)])
    embedded = dataset.map_batches(
        CLIPBatchEmbedder,
        fn_constructor_kwargs={"featurizer": featurizer},
        batch_size=BATCH_SIZE,
        compute=ray_data.ActorPoolStrategy(size=1),  # a CPU left for the rest
        num_cpus=1,
    ).take_all()
    assert len(embedded) == N_IMAGES
    for row in embedded:
        i = row["row"]
        assert row["path"] == images[i]
        assert row["content_sha256"] == content_key(images[i])
        # Ray Data forms its own batches: equal up to float rounding.
        np.testing.assert_allclose(row["embedding"], expected[i], rtol=0, atol=1e-6)
        assert (row["error"] is None) == (i not in (5, 17))


def test_batch_embedder_is_a_plain_callable(featurizer, images, expected, tmp_path):
    embed = CLIPBatchEmbedder(featurizer)
    batch = {"path": np.array(images[4:8], dtype=object), "id": np.arange(4)}
    out = embed(batch)
    assert list(out["id"]) == [0, 1, 2, 3]  # the batch's columns are kept
    assert out["embedding"].shape == (4, featurizer.fit().embedding_dim_)
    assert list(out["error"][:1]) == [None] and "not an image" in out["error"][1]
    assert np.isnan(out["embedding"][1]).all()
    np.testing.assert_allclose(out["embedding"][0], expected[4], rtol=0, atol=1e-6)
    with pytest.raises(KeyError, match="no column 'path'"):
        embed({"file": batch["path"]})
    cached = CLIPFeaturizer(**TINY, cache_dir=tmp_path / "cache")
    with pytest.warns(UserWarning, match="cache_dir has no effect in CLIPBatchEmbed"):
        CLIPBatchEmbedder(cached)
