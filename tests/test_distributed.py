"""sklearn_clip.distributed: sharded, resumable embedding on this machine,
Ray and Dask; the Ray Data step; model search under joblib's Dask and Ray
backends.

One local cluster per engine for the whole module (Dask: two single-thread
worker processes; Ray: two CPUs). Tests that need one are marked
``distributed`` (deselect with ``-m "not distributed"``).
"""

import csv
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sklearn_clip import CLIPFeaturizer
from sklearn_clip._cli import main as cli_main
from sklearn_clip._embedding_cache import content_key
from sklearn_clip.distributed import (
    CLIPBatchEmbedder,
    EmbeddingStore,
    ManifestMismatchError,
    ShardsFailedError,
    embed_to_parquet,
)

from .conftest import TINY

pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]
pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")

# 29 images in shards of 8 (a last shard of 5) and batches of 4 (a last
# batch of one): shards align with batches, so the embeddings are bitwise
# those of one transform call.
N_IMAGES, SHARD_SIZE, BATCH_SIZE = 29, 8, 4


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Image paths with two bad inputs (a missing and a corrupt file)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_IMAGES):
        size = (int(rng.integers(20, 48)), int(rng.integers(20, 48)))
        pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        path = folder / f"img-{i:02d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    paths[5] = str(corrupt)
    paths[17] = str(folder / "missing.png")
    return paths


@pytest.fixture(scope="module")
def featurizer():
    return CLIPFeaturizer(**TINY, batch_size=BATCH_SIZE, on_error="nan")


@pytest.fixture(scope="module")
def expected(featurizer, images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return featurizer.fit_transform(images)


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    environ = dict(os.environ)  # LocalCluster sets OMP_NUM_THREADS=1 & co. here
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster
    os.environ.clear()
    os.environ.update(environ)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    environ = dict(os.environ)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.clear()
    os.environ.update(environ)


def engine_kwargs(backend, request):
    """Keyword arguments running ``embed_to_parquet`` on the module's cluster."""
    if backend == "dask":
        return {"address": request.getfixturevalue("dask_cluster").scheduler_address}
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
        return {"n_workers": 2}
    return {}


BACKENDS = [
    "local",
    pytest.param("dask", marks=pytest.mark.distributed),
    pytest.param("ray", marks=pytest.mark.distributed),
]


def part_times(folder):
    return {
        name: os.stat(folder / name).st_mtime_ns
        for name in os.listdir(folder)
        if name.startswith("part-")
    }


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


def test_export_into_the_embedding_cache_gives_warm_hits(
    featurizer, images, expected, tmp_path, monkeypatch
):
    store = embed_to_parquet(featurizer, images, tmp_path / "store", shard_size=8)
    assert store.to_embedding_cache(tmp_path / "cache") == N_IMAGES - 2
    embedded = []
    original = CLIPFeaturizer._embed

    def counting(self, items, todo, *args):
        embedded.extend(int(i) for i in todo)
        return original(self, items, todo, *args)

    monkeypatch.setattr(CLIPFeaturizer, "_embed", counting)
    cached = CLIPFeaturizer(**TINY, on_error="nan", cache_dir=tmp_path / "cache")
    with pytest.warns(UserWarning, match="could not be read"):
        got = cached.fit_transform(images)
    assert embedded == [5, 17]  # only the two bad inputs were tried again
    np.testing.assert_array_equal(got, expected)


def test_memory_mapped_output(featurizer, images, expected, tmp_path):
    store = embed_to_parquet(featurizer, images, tmp_path / "store", shard_size=8)
    path = tmp_path / "X.npy"
    with pytest.warns(UserWarning, match="could not be read"):
        got = store.to_numpy(on_error="nan", memmap_path=path)
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(np.load(path), expected)


def test_invalid_arguments_are_refused(featurizer, images, tmp_path, monkeypatch):
    out = tmp_path / "store"
    with pytest.raises(ValueError, match=r"inputs\[1\] is a ndarray"):
        embed_to_parquet(featurizer, [images[0], np.zeros((4, 4, 3))], out)
    with pytest.raises(ValueError, match=r"inputs\[0\] is a URL"):
        embed_to_parquet(featurizer, ["s3://bucket/a.jpg"], out)
    with pytest.raises(ValueError, match="one path"):
        embed_to_parquet(featurizer, images[0], out)
    with pytest.raises(ValueError, match="empty"):
        embed_to_parquet(featurizer, [], out)
    with pytest.raises(ValueError, match="backend must be one of"):
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


def test_relative_paths_are_stored_absolute(featurizer, images, tmp_path, monkeypatch):
    folder = os.path.dirname(images[0])
    monkeypatch.chdir(folder)
    relative = [os.path.basename(path) for path in images[:3]]
    store = embed_to_parquet(featurizer, relative, tmp_path / "store", shard_size=8)
    assert list(store.inputs()) == images[:3]


def test_a_folder_claimed_by_another_job_is_refused_before_any_work(
    featurizer, images, tmp_path
):
    from sklearn_clip._parquet_shards import job_fields, output_location, write_manifest

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


def test_a_shard_of_another_job_is_never_used(featurizer, images, expected, tmp_path):
    a = embed_to_parquet(featurizer, images[:16], tmp_path / "a", shard_size=8)
    b = embed_to_parquet(featurizer, images[8:24], tmp_path / "b", shard_size=8)
    assert a.is_complete and b.is_complete
    (tmp_path / "b" / "part-000000.parquet").write_bytes(
        (tmp_path / "a" / "part-000000.parquet").read_bytes()
    )
    assert b.missing_shards() == [0]
    with pytest.raises(FileNotFoundError, match=r"missing or not valid \(0\)"):
        b.read_shard(0)
    with pytest.warns(UserWarning, match="written for another input list"):
        b = embed_to_parquet(featurizer, images[8:24], tmp_path / "b", shard_size=8)
    with pytest.warns(UserWarning, match="could not be read"):  # images[17]
        np.testing.assert_array_equal(b.to_numpy(on_error="nan"), expected[8:24])


def test_file_names_that_are_not_utf8(featurizer, images, tmp_path):
    name = os.fsdecode(b"latin1-\xe9 photo.png")
    path = os.path.join(os.fsencode(tmp_path).decode(), name)
    Image.open(images[0]).save(path)
    store = embed_to_parquet(featurizer, [images[0], path], tmp_path / "store")
    assert store.errors() == []
    assert store.inputs()[1].endswith("latin1-\\xe9 photo.png")
    X = store.to_numpy()
    np.testing.assert_array_equal(X[0], X[1])


def test_cli_lists_and_errors(featurizer, images, tmp_path, capsys):
    common = ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]
    table = tmp_path / "excel.csv"
    table.write_bytes("\ufeffpath,label\n".encode() + f"{images[0]},x\n".encode())
    assert cli_main(["embed", str(table), "-o", str(tmp_path / "s1"), *common]) == 0
    assert list(EmbeddingStore(tmp_path / "s1").inputs()) == [images[0]]

    table.write_text(f"path,label\n{images[0]},x\n,y\n")
    assert cli_main(["embed", str(table), "-o", str(tmp_path / "s2"), *common]) == 2
    assert "line 3: no path" in capsys.readouterr().err

    listing = tmp_path / "urls.txt"
    listing.write_text("s3://bucket/a.jpg\n")
    assert cli_main(["embed", str(listing), "-o", str(tmp_path / "s3"), *common]) == 2
    assert "is a URL ('s3://bucket/a.jpg')" in capsys.readouterr().err

    # A failing shard: one line on stderr, exit status 2, no traceback.
    (tmp_path / "s4" / "part-000000.parquet").mkdir(parents=True)
    (tmp_path / "s4" / "_manifest.json").write_text("{}")
    assert cli_main(["embed", images[0], "-o", str(tmp_path / "s4"), *common]) == 2
    assert "not a manifest of this package" in capsys.readouterr().err


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


def _damage(path, column="embedding", xor_bytes=1):
    """Flip bits in the middle of a column's data pages, as a bad disk would."""
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(path)
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    chunk = metadata.row_group(0).column(
        next(i for i, name in enumerate(names) if name.startswith(column))
    )
    start = (
        chunk.dictionary_page_offset
        if chunk.has_dictionary_page
        else chunk.data_page_offset
    )
    middle = start + chunk.total_compressed_size // 2
    data = bytearray(Path(path).read_bytes())
    for i in range(xor_bytes):
        data[middle + i] ^= 0xA5 if xor_bytes > 1 else 0x10
    Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize(
    "column, xor_bytes",
    [("embedding", 1), ("embedding", 64), ("content_sha256", 1)],
    ids=["bit in an embedding", "64 bytes", "bit in a content hash"],
)
def test_a_damaged_data_page_is_never_returned(
    featurizer, images, expected, tmp_path, column, xor_bytes
):
    from sklearn_clip._embedding_cache import EmbeddingCache

    output = tmp_path / "store"
    store = embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE)
    _damage(output / "part-000001.parquet", column, xor_bytes)
    before = part_times(output)
    # Every read that touches the damaged column raises; reads of intact
    # columns return what was written (pages are checked one by one).
    reads = {
        "embedding": lambda: store.to_numpy(on_error="nan"),
        "content_sha256": lambda: store.content_hashes(),
        "input": lambda: store.inputs(),
    }
    for read_column, read in reads.items():
        if read_column == column:
            with pytest.raises(OSError, match="shard 1 of the store .* damaged"):
                read()
    with pytest.raises(OSError, match="shard 1 of the store .* damaged"):
        store.read_shard(1)
    with pytest.raises(OSError, match="shard 1 of the store .* damaged"):
        store.to_embedding_cache(tmp_path / "cache")
    assert list(store.inputs()) == [os.path.abspath(p) for p in images]
    if column != "embedding":
        with pytest.warns(UserWarning, match="could not be read"):
            np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)
    # The export stopped at shard 1: the cache holds shard 0's rows only.
    cache_key = store.manifest["cache_key"]
    hashes = [content_key(path) for path in images[: 2 * SHARD_SIZE]]
    with EmbeddingCache(tmp_path / "cache", cache_key, expected.shape[1]) as cache:
        hits = cache.get(hashes)
    found = [i for i, key in enumerate(hashes) if key in hits]
    assert found == [i for i in range(SHARD_SIZE) if i != 5]  # 5: corrupt image
    # A re-run reads every page, computes shard 1 again, and says so.
    with pytest.warns(UserWarning, match=r"1 shard file\(s\).*part-000001.*damaged"):
        store = embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE)
    after = part_times(output)
    assert after.pop("part-000001.parquet") != before.pop("part-000001.parquet")
    assert after == before  # nothing else rewritten
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)


def test_a_shard_without_page_checksums_is_computed_again(
    featurizer, images, expected, tmp_path
):
    import pyarrow.parquet as pq

    output = tmp_path / "store"
    store = embed_to_parquet(featurizer, images[:16], output, shard_size=SHARD_SIZE)
    path = output / "part-000000.parquet"
    table = pq.read_table(path)  # as an older version wrote it
    metadata = dict(table.schema.metadata)
    del metadata[b"sklearn_clip.page_checksums"]
    pq.write_table(table.replace_schema_metadata(metadata), path)
    assert store.missing_shards() == [0]
    with pytest.raises(FileNotFoundError, match="missing or not valid"):
        store.to_numpy()
    with pytest.warns(UserWarning, match="without page checksums"):
        store = embed_to_parquet(featurizer, images[:16], output, shard_size=SHARD_SIZE)
    assert store.is_complete


def test_messages_say_what_is_true(featurizer, images, tmp_path):
    import json

    output = tmp_path / "store"
    embed_to_parquet(featurizer, images[:16], output, shard_size=SHARD_SIZE)
    # A part file past the job's last shard is ignored, not "computed again".
    (output / "part-000009.parquet").write_bytes(
        (output / "part-000001.parquet").read_bytes()
    )
    with pytest.warns(UserWarning) as record:
        embed_to_parquet(featurizer, images[:16], output, shard_size=SHARD_SIZE)
    messages = [str(w.message) for w in record]
    assert any("part-000009" in m and "ignored" in m for m in messages)
    assert not any("computed again" in m for m in messages)
    # An edited manifest: re-running "with the same arguments" would be
    # refused, so the store does not suggest it.
    manifest_path = output / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["cache_key"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError) as error:
        EmbeddingStore(output).to_numpy()
    assert "was the manifest edited" in str(error.value)
    assert "same arguments" not in str(error.value)


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
