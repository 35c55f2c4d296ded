"""embed_to_parquet on this machine, Ray and Dask: bitwise equal to a local
transform, resumable shard by shard, refusing other jobs and bad arguments;
model search under joblib's Dask and Ray backends."""

import os

import numpy as np
import pytest
from PIL import Image

from sklearn_clip import CLIPFeaturizer
from sklearn_clip._embedding_cache import content_key
from sklearn_clip.distributed import (
    EmbeddingStore,
    ManifestMismatchError,
    ShardsFailedError,
    embed_to_parquet,
)

from ..conftest import TINY
from .conftest import (
    BACKENDS,
    BATCH_SIZE,
    N_IMAGES,
    SHARD_SIZE,
    engine_kwargs,
    part_times,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]
pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_equals_local_transform_bitwise_in_input_order(
    backend, request, featurizer, images, expected, tmp_path
):
    store = embed_to_parquet(
        featurizer,
        images,
        tmp_path / "store",
        backend=backend,
        shard_size=SHARD_SIZE,
        **engine_kwargs(backend, request),
    )
    assert store.is_complete and len(store) == N_IMAGES
    assert sorted(part_times(tmp_path / "store")) == [
        f"part-{i:06d}.parquet" for i in range(4)
    ]
    with pytest.warns(UserWarning, match="2 of 29 inputs could not be read"):
        got = store.to_numpy(on_error="nan")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)  # NaN rows included
    assert list(store.inputs()) == images
    assert list(store.content_hashes()) == [content_key(path) for path in images]
    errors = store.errors()
    assert [(row, path) for row, path, _ in errors] == [
        (5, images[5]),
        (17, images[17]),
    ]
    assert "not an image file" in errors[0][2] and "does not exist" in errors[1][2]
    with pytest.raises(ValueError, match=r"(?s)2 of 29 inputs.*\[17\]"):
        store.to_numpy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_shard_is_reported_and_a_rerun_computes_only_it(
    backend, request, featurizer, images, expected, tmp_path
):
    output = tmp_path / "store"
    kwargs = engine_kwargs(backend, request)
    run = dict(shard_size=SHARD_SIZE, backend=backend, **kwargs)
    embed_to_parquet(featurizer, images, output, **run)
    for name in part_times(output):
        (output / name).unlink()
    # A fault in one shard: a folder where its file must go makes its
    # rename fail on the worker; the other shards finish.
    (output / "part-000002.parquet").mkdir()
    with pytest.raises(ShardsFailedError, match=r"1 of 4 shards failed") as raised:
        with pytest.warns(UserWarning, match="not usable"):
            embed_to_parquet(featurizer, images, output, **run)
    assert list(raised.value.failures) == [2]
    assert "IsADirectoryError" in raised.value.failures[2]
    with pytest.raises(FileNotFoundError, match=r"not valid \(2\)\. Run embed_to_parq"):
        EmbeddingStore(output).to_numpy()
    assert EmbeddingStore(output).missing_shards() == [2]
    (output / "part-000002.parquet").rmdir()
    before = part_times(output)
    assert sorted(before) == [f"part-00000{i}.parquet" for i in (0, 1, 3)]

    store = embed_to_parquet(featurizer, images, output, **run)
    after = part_times(output)
    assert set(after) == set(before) | {"part-000002.parquet"}
    assert all(after[name] == before[name] for name in before)
    np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)


def test_lost_and_damaged_shards_are_recomputed(
    featurizer, images, expected, tmp_path, monkeypatch
):
    output = tmp_path / "store"
    embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE)
    (output / "part-000000.parquet").unlink()
    damaged = output / "part-000003.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    before = part_times(output)
    with pytest.warns(UserWarning, match=r"1 shard file\(s\).*part-000003"):
        store = embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE)
    after = part_times(output)
    assert after["part-000001.parquet"] == before["part-000001.parquet"]
    assert after["part-000002.parquet"] == before["part-000002.parquet"]
    assert after["part-000003.parquet"] != before["part-000003.parquet"]
    np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)
    # A complete store: a re-run starts no engine (Ray cannot even be
    # imported here) and rewrites nothing.
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE, backend="ray")
    assert part_times(output) == after


def test_another_job_in_the_folder_is_refused(featurizer, images, tmp_path):
    output = tmp_path / "store"
    embed_to_parquet(featurizer, images[:10], output, shard_size=SHARD_SIZE)
    with pytest.raises(ManifestMismatchError, match=r"n_inputs: 10 there, 11 now"):
        embed_to_parquet(featurizer, images[:11], output, shard_size=SHARD_SIZE)
    with pytest.raises(ManifestMismatchError, match="inputs_sha256"):
        embed_to_parquet(featurizer, images[1:11], output, shard_size=SHARD_SIZE)
    with pytest.raises(ManifestMismatchError, match=r"shard_size: 8 there, 4 now"):
        embed_to_parquet(featurizer, images[:10], output, shard_size=4)
    other = CLIPFeaturizer(**TINY, batch_size=BATCH_SIZE, normalize=False)
    with pytest.raises(ManifestMismatchError, match="featurizer normalize"):
        embed_to_parquet(other, images[:10], output, shard_size=SHARD_SIZE)
    # Settings that do not change the embeddings are not part of the job.
    resumed = CLIPFeaturizer(**TINY, batch_size=2, progress=False)
    embed_to_parquet(resumed, images[:10], output, shard_size=SHARD_SIZE)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "part-000000.parquet").write_bytes(b"x")
    with pytest.raises(ValueError, match="no _manifest.json"):
        embed_to_parquet(featurizer, images, foreign, shard_size=SHARD_SIZE)
    with pytest.raises(FileNotFoundError, match="not an embedding store"):
        EmbeddingStore(foreign)


def test_invalid_arguments_are_refused(featurizer, images, tmp_path, monkeypatch):
    out = tmp_path / "store"
    with pytest.raises(ValueError, match=r"inputs\[1\] is a ndarray"):
        embed_to_parquet(featurizer, [images[0], np.zeros((4, 4, 3))], out)
    with pytest.raises(ValueError, match="one path"):
        embed_to_parquet(featurizer, images[0], out)
    with pytest.raises(ValueError, match="empty"):
        embed_to_parquet(featurizer, [], out)
    with pytest.raises(ValueError, match="'backend' parameter of embed_to_parquet"):
        embed_to_parquet(featurizer, images, out, backend="spark")
    with pytest.raises(ValueError, match="shard_size"):
        embed_to_parquet(featurizer, images, out, shard_size=0)
    with pytest.raises(ValueError, match="n_workers applies"):
        embed_to_parquet(featurizer, images, out, n_workers=2)
    with pytest.raises(TypeError, match="CLIPFeaturizer"):
        embed_to_parquet(object(), images, out)
    assert not out.exists()
    cached = CLIPFeaturizer(**TINY, cache_dir=tmp_path / "cache")
    with pytest.warns(UserWarning, match="cache_dir has no effect in embed_to_parq"):
        embed_to_parquet(cached, images[:3], tmp_path / "cached")
    # A missing engine names the extra that installs it.
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    with pytest.raises(ImportError, match=r"sklearn-clip\[ray\]"):
        embed_to_parquet(featurizer, images, out, backend="ray")


def few_shot_pets(load_features):
    """4 shots of each of the 37 Oxford-IIIT Pets breeds (real CLIP features)."""
    from sklearn_clip import few_shot_indices

    data = load_features("oxford_pets")
    rows = few_shot_indices(data["y_train"], 4, random_state=0)
    return data["X_train"][rows], data["y_train"][rows]


def grid_search(X, y, **parallel):
    import joblib
    from sklearn.model_selection import GridSearchCV

    from sklearn_clip import LinearProbeClassifier

    search = GridSearchCV(
        LinearProbeClassifier(random_state=0),
        {"alpha": [0.1, 1.0, 10.0]},
        cv=3,
        n_jobs=2 if parallel else 1,
    )
    with joblib.parallel_config(**parallel) if parallel else _nothing():
        return search.fit(X, y)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.distributed
@pytest.mark.parametrize("backend", ["dask", "ray"])
def test_grid_search_on_a_cluster_equals_one_process(backend, request, load_features):
    X, y = few_shot_pets(load_features)
    reference = grid_search(X, y)
    if backend == "dask":
        distributed = pytest.importorskip("distributed")
        address = request.getfixturevalue("dask_cluster").scheduler_address
        with distributed.Client(address):
            search = grid_search(X, y, backend="dask", scatter=[X, y])
    else:
        request.getfixturevalue("ray_cluster")
        from ray.util.joblib import register_ray

        register_ray()
        search = grid_search(X, y, backend="ray", ray_remote_args={"num_cpus": 1})
    assert search.best_params_ == reference.best_params_
    for key in ("mean_test_score", "split0_test_score", "split2_test_score"):
        np.testing.assert_array_equal(
            search.cv_results_[key], reference.cv_results_[key]
        )
    np.testing.assert_array_equal(search.predict(X), reference.predict(X))


def test_relative_paths_are_stored_absolute(featurizer, images, tmp_path, monkeypatch):
    folder = os.path.dirname(images[0])
    monkeypatch.chdir(folder)
    relative = [os.path.basename(path) for path in images[:3]]
    store = embed_to_parquet(featurizer, relative, tmp_path / "store", shard_size=8)
    assert list(store.inputs()) == images[:3]


def test_a_folder_claimed_by_another_job_is_refused_before_any_work(
    featurizer, images, tmp_path
):
    from sklearn_clip.distributed._format import (
        job_fields,
        output_location,
        write_manifest,
    )

    fs, root = output_location(tmp_path / "store")
    # Another job claimed the folder and is still starting its workers.
    claim = {**job_fields(featurizer, images[:8], 8), "cache_key": None}
    assert write_manifest(fs, root, claim, exclusive=True)
    assert not write_manifest(fs, root, claim, exclusive=True)
    with pytest.raises(ManifestMismatchError, match="inputs_sha256"):
        embed_to_parquet(featurizer, images[8:16], tmp_path / "store", shard_size=8)
    # The claiming job itself goes on.
    store = embed_to_parquet(featurizer, images[:8], tmp_path / "store", shard_size=8)
    assert store.is_complete


def test_file_names_that_are_not_utf8(featurizer, images, tmp_path):
    name = os.fsdecode(b"latin1-\xe9 photo.png")
    path = os.path.join(os.fsencode(tmp_path).decode(), name)
    Image.open(images[0]).save(path)
    store = embed_to_parquet(featurizer, [images[0], path], tmp_path / "store")
    assert store.errors() == []
    assert store.inputs()[1].endswith("latin1-\\xe9 photo.png")
    X = store.to_numpy()
    np.testing.assert_array_equal(X[0], X[1])


@pytest.mark.distributed
def test_resources_no_worker_offers_are_refused(request, featurizer, images, tmp_path):
    address = request.getfixturevalue("dask_cluster").scheduler_address
    with pytest.raises(ValueError, match=r"no Dask worker offers .*'GPU': 1"):
        embed_to_parquet(
            featurizer,
            images,
            tmp_path / "dask",
            backend="dask",
            address=address,
            worker_resources={"GPU": 1},
        )
    request.getfixturevalue("ray_cluster")
    with pytest.raises(ValueError, match=r"need 1 TPU; the cluster has 0"):
        embed_to_parquet(
            featurizer,
            images,
            tmp_path / "ray",
            backend="ray",
            n_workers=1,
            worker_resources={"num_cpus": 1, "resources": {"TPU": 1}},
        )


def test_progress_bar_counts_images_and_shards(featurizer, images, tmp_path, capsys):
    embed_to_parquet(
        featurizer, images, tmp_path / "store", shard_size=8, progress=True
    )
    err = capsys.readouterr().err
    assert "29/29" in err and "4/4 shards" in err


@pytest.mark.distributed
def test_ray_address_cannot_be_ignored(ray_cluster, featurizer, images, tmp_path):
    with pytest.raises(ValueError, match="already initialised"):
        embed_to_parquet(
            featurizer, images, tmp_path / "store", backend="ray", address="auto"
        )


def test_a_missing_parquet_library_is_named_before_any_work(
    featurizer, images, tmp_path, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setattr(
        CLIPFeaturizer, "_embed", lambda *a: pytest.fail("embedded without pyarrow")
    )
    with pytest.raises(ImportError, match=r"pyarrow is required.*pip install"):
        embed_to_parquet(featurizer, images, tmp_path / "store")
    assert not (tmp_path / "store").exists()
