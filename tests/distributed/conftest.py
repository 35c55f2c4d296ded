"""Fixtures of the distributed tests: 29 images with two bad ones, the tiny
featurizer and its reference embeddings, a local Dask and a Ray cluster (one
per test module that asks for it; -m "not distributed" skips those tests)."""

import os
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sklearn_clip import CLIPFeaturizer

from ..conftest import TINY

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


def damage(path, column="embedding", xor_bytes=1):
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


def make_tars(images, folder, per_tar=10):
    """WebDataset archives of ``images`` (``<key>.<ext>`` image member and a
    ``<key>.cls`` label member per sample; the missing file becomes a sample
    with no image). Returns ``(archive paths, samples per archive)``, each
    sample as the item the archive holds (ImageBytes, or a FailedRead)."""
    import io
    import tarfile

    from sklearn_clip._images import FailedRead, ImageBytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tars, samples = [], []
    for start in range(0, len(images), per_tar):
        path = folder / f"shard-{start // per_tar:06d}.tar"
        held = []
        with tarfile.open(path, "w") as archive:
            for i, image in enumerate(images[start : start + per_tar], start):
                key = f"{i:06d}"

                def add(name, data):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))

                if os.path.exists(image):
                    data = Path(image).read_bytes()
                    name = f"{key}{Path(image).suffix}"
                    add(name, data)
                    held.append((key, ImageBytes(data, name=f"{path}#{name}")))
                else:
                    held.append((key, FailedRead(key, ValueError("no image"))))
                add(f"{key}.cls", str(i % 3).encode())
        tars.append(str(path))
        samples.append(held)
    return tars, samples


@contextmanager
def moto_s3(buckets):
    """A moto S3 server on 127.0.0.1 with ``buckets`` created; yields its
    storage_options. The credentials are the emulator's only (no request
    leaves the loopback); the environment is restored afterwards."""
    import boto3
    from moto.server import ThreadedMotoServer

    environ = dict(os.environ)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "region_name": "us-east-1",
        },
    }
    try:
        client = boto3.client("s3", **options["client_kwargs"])
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield options
    finally:
        server.stop()
        os.environ.clear()
        os.environ.update(environ)
