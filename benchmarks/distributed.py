"""Embedding on one process, a Dask cluster and a Ray cluster, in one run.

Same photos, model, batch and shard sizes for every row: the local
``CLIPFeaturizer`` (one process, its own threads) against
``embed_to_parquet`` on each engine with 1 and 2 workers (a local cluster
started by the row itself), then the cost of resuming a job after losing
half of its shards. Rows run in an interleaved order, ``--repeats`` times,
and the table shows the median.

Columns:

* start-up s: from nothing to every worker holding the model (cluster
  start, worker processes, imports, model load);
* embed s and images/s: the shards themselves, after start-up;
* CPU s: CPU time of this process and every process below it (workers,
  Ray's and Dask's own services) over the whole row;
* resume s: a re-run after deleting every other shard, start-up included.

First, the cost of the shards' Parquet page checksums: write and read
throughput with and without them, interleaved.

    python benchmarks/distributed.py                      # CPU, ~6 min
    python benchmarks/distributed.py --checksums-only     # seconds
    python benchmarks/distributed.py --store-shards 20000 # a large store, ~1 min
    python benchmarks/distributed.py --object-store       # S3 emulator vs files
    python benchmarks/distributed.py --device cuda --model ViT-L-14 --repeats 1
"""

import argparse
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

# This file's name would shadow Dask's ``distributed`` package: take its
# folder off the import path before anything imports Dask.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import psutil  # noqa: E402

from sklearn_clip import CLIPFeaturizer, clear_clip_cache  # noqa: E402
from sklearn_clip._images import list_image_files  # noqa: E402
from sklearn_clip.distributed import embed_to_parquet  # noqa: E402
from sklearn_clip.distributed._engines import ENGINES  # noqa: E402
from sklearn_clip.distributed._format import (  # noqa: E402
    job_fields,
    shard_bounds,
    shard_count,
    write_manifest,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def tree_cpu_seconds():
    """CPU seconds of this process and all its descendants (those alive now
    and, through the ``children_*`` counters, those already reaped).
    """
    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user
        total += times.children_system
    return total


def run_row(backend, n_workers, featurizer, paths, shard_size, folder):
    """Embed ``paths`` into ``folder`` with one engine; time its phases."""
    clear_clip_cache()  # the local row loads its model too
    shutil.rmtree(folder, ignore_errors=True)
    from fsspec.implementations.local import LocalFileSystem

    fs, root = LocalFileSystem(), str(folder)
    cpu_start, wall_start = tree_cpu_seconds(), time.perf_counter()
    params = featurizer.get_params()
    n_engine_workers = None if backend == "local" else n_workers
    with ENGINES[backend](params, n_engine_workers, None, "auto") as engine:
        cache_key = engine.cache_key()
        started = time.perf_counter()
        write_manifest(
            fs,
            root,
            {**job_fields(featurizer, paths, shard_size), "cache_key": cache_key},
        )
        tasks = []
        for shard in range(shard_count(len(paths), shard_size)):
            start, stop = shard_bounds(shard, shard_size, len(paths))
            tasks.append(
                (params, paths[start:stop], shard, start, root, cache_key, None)
            )
        for _, outcome in engine.map(tasks):
            if isinstance(outcome, BaseException):
                raise outcome
        finished = time.perf_counter()
        cpu = tree_cpu_seconds() - cpu_start
    return {
        "start-up s": started - wall_start,
        "embed s": finished - started,
        "images/s": len(paths) / (finished - started),
        "CPU s": cpu,
    }


def resume_row(backend, n_workers, featurizer, paths, shard_size, folder):
    """Delete every other shard of a finished store, then time the re-run."""
    clear_clip_cache()
    parts = sorted(p for p in os.listdir(folder) if p.startswith("part-"))
    for name in parts[::2]:
        os.remove(Path(folder) / name)
    kwargs = {} if backend == "local" else {"n_workers": n_workers}
    start = time.perf_counter()
    embed_to_parquet(
        featurizer,
        paths,
        folder,
        backend=backend,
        shard_size=shard_size,
        progress=False,
        **kwargs,
    )
    return time.perf_counter() - start, len(parts[::2]), len(parts)


def checksum_table(rows=4096, dim=512, shards=8, repeats=5):
    """Write and read shards of ``rows`` x ``dim`` embeddings on local disk,
    with and without Parquet page checksums (interleaved), through the
    package's own table layout; returns Markdown lines.
    """
    import numpy as np
    import pyarrow.parquet as pq

    from sklearn_clip.distributed._format import shard_table

    rng = np.random.default_rng(0)
    tables = [
        shard_table(
            i * rows,
            [f"/data/images/{i:03d}/{j:07d}.jpg" for j in range(rows)],
            [f"{i * rows + j:064x}" for j in range(rows)],
            rng.normal(size=(rows, dim)).astype(np.float32),
            [None] * rows,
        )
        for i in range(shards)
    ]
    seconds = {(side, what): [] for side in (False, True) for what in ("w", "r")}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for checksums in (False, True) if repeat % 2 == 0 else (True, False):
                start = time.perf_counter()
                for i, table in enumerate(tables):
                    pq.write_table(
                        table, f"{tmp}/{i}.parquet", write_page_checksum=checksums
                    )
                seconds[checksums, "w"].append(time.perf_counter() - start)
                start = time.perf_counter()
                for i in range(shards):
                    pq.read_table(
                        f"{tmp}/{i}.parquet", page_checksum_verification=checksums
                    )
                seconds[checksums, "r"].append(time.perf_counter() - start)
    total = rows * shards
    rate = {key: total / statistics.median(v) for key, v in seconds.items()}
    return [
        f"\n### Parquet page checksums: {shards} shards of {rows} x {dim} "
        f"embeddings on local disk ({machine_name()}), median of {repeats}\n",
        "| | write rows/s | read rows/s |",
        "|---|---|---|",
        f"| without checksums | {rate[False, 'w']:,.0f} | {rate[False, 'r']:,.0f} |",
        f"| with checksums (written, verified) | {rate[True, 'w']:,.0f} | "
        f"{rate[True, 'r']:,.0f} |",
        f"| ratio | {rate[True, 'w'] / rate[False, 'w']:.2f}x | "
        f"{rate[True, 'r'] / rate[False, 'r']:.2f}x |",
    ]


def store_table(n_shards=20_000, repeats=3):
    """``EmbeddingStore.missing_shards()`` on a synthetic store of
    ``n_shards`` one-row shards: the first call (one listing, every footer
    read) and later calls (one listing, nothing read), median of ``repeats``.
    """
    import numpy as np

    from sklearn_clip.distributed import EmbeddingStore
    from sklearn_clip.distributed._format import shard_table, write_shard

    dim = 4
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        paths = [f"/data/{i:06d}.jpg" for i in range(n_shards)]
        digest = "0" * 64
        manifest = {
            "format": 1,
            "featurizer": {},
            "embedding_dim": dim,
            "shard_size": 1,
            "n_inputs": n_shards,
            "inputs_sha256": digest,
            "cache_key": "synthetic",
        }
        write_manifest_(root, manifest)
        job = {"cache_key": "synthetic", "inputs_sha256": digest}
        start = time.perf_counter()
        for i, path in enumerate(paths):
            table = shard_table(
                i, [path], [digest], np.zeros((1, dim), np.float32), [None]
            )
            write_shard(table, i, [path], job, str(root))
        written = time.perf_counter() - start
        first, later = [], []
        for _ in range(repeats):
            store = EmbeddingStore(root)
            start = time.perf_counter()
            assert store.missing_shards() == []
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert store.missing_shards() == []
            later.append(time.perf_counter() - start)
    return [
        f"\n### EmbeddingStore.missing_shards() on {n_shards:,} one-row shards "
        f"on local disk ({machine_name()}; written in {written:.0f} s), median of "
        f"{repeats}\n",
        "| call | seconds |",
        "|---|---|",
        f"| first (listing + every footer) | {statistics.median(first):.2f} |",
        f"| later (listing only) | {statistics.median(later):.3f} |",
    ]


def object_store_table(featurizer, paths, repeats=3):
    """Embedding throughput of the same photos as local files and as objects
    of moto's S3 server on loopback (through s3fs), with embed_to_parquet's
    local backend; rows interleaved, median of ``repeats``.
    """
    import socket

    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
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
    boto3.client("s3", **options["client_kwargs"]).create_bucket(Bucket="photos")
    fs = s3fs.S3FileSystem(**options)
    urls = []
    for i, path in enumerate(paths):
        url = f"s3://photos/{i:05d}{Path(path).suffix}"
        fs.put(path, url)
        urls.append(url)
    remote = featurizer.set_params(storage_options=options)
    rates = {
        "local files": [],
        "S3 objects (moto on loopback)": [],
        "local WebDataset tars": [],
        "WebDataset tars in S3": [],
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tars, tar_urls = write_tars(paths, Path(tmp) / "tars", per_tar=64)
            for path in tars:
                fs.put(str(path), f"s3://photos/tars/{path.name}")
            sources = {
                "local files": paths,
                "S3 objects (moto on loopback)": urls,
                "local WebDataset tars": [str(p) for p in tars],
                "WebDataset tars in S3": tar_urls,
            }
            for repeat in range(repeats):
                names = list(rates)
                for name in names if repeat % 2 == 0 else names[::-1]:
                    inputs = sources[name]
                    start = time.perf_counter()
                    embed_to_parquet(
                        remote,
                        inputs,
                        Path(tmp) / f"{name.replace(' ', '-')}-{repeat}",
                        # archives are one shard each, of 64 photos
                        **({} if "tars" in name else {"shard_size": 64}),
                        progress=False,
                    )
                    rates[name].append(len(paths) / (time.perf_counter() - start))
    finally:
        server.stop()
    local = statistics.median(rates["local files"])
    lines = [
        f"\n### The same {len(paths)} photos as files and WebDataset tars, local and "
        "in S3, "
        f"{featurizer.model} on {featurizer.device} ({machine_name()}), "
        f"embed_to_parquet local backend, median of {repeats}\n",
        "| source | images/s | vs local |",
        "|---|---|---|",
    ]
    for name, values in rates.items():
        rate = statistics.median(values)
        lines.append(f"| {name} | {rate:.1f} | {rate / local:.2f}x |")
    return lines


def write_tars(paths, folder, per_tar):
    """WebDataset archives of ``paths`` (``<key>.<ext>`` members), and their
    S3 URLs under ``s3://photos/tars/``.
    """
    import tarfile

    folder.mkdir(parents=True)
    tars = []
    for start in range(0, len(paths), per_tar):
        tar = folder / f"shard-{start // per_tar:06d}.tar"
        with tarfile.open(tar, "w") as archive:
            for i, path in enumerate(paths[start : start + per_tar], start):
                archive.add(path, arcname=f"{i:06d}{Path(path).suffix.lower()}")
        tars.append(tar)
    return tars, [f"s3://photos/tars/{tar.name}" for tar in tars]


def write_manifest_(root, manifest):
    from sklearn_clip.distributed._format import output_location, write_manifest

    fs, path = output_location(str(root))
    write_manifest(fs, path, manifest)


def machine_name():
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--photos", default="hymenoptera")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--checksums-only",
        action="store_true",
        help="only the cost of the shards' page checksums (seconds)",
    )
    parser.add_argument(
        "--store-shards",
        type=int,
        default=0,
        metavar="N",
        help="only EmbeddingStore.missing_shards() on a synthetic store of N shards",
    )
    parser.add_argument(
        "--object-store",
        action="store_true",
        help="only local files against the same images in moto's S3 emulator",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="pretrained=None")
    # Random weights: the speed of a model does not depend on its weights.
    featurizer = CLIPFeaturizer(
        args.model,
        pretrained=None,
        device=args.device,
        batch_size=args.batch_size,
        progress=False,
    )
    if args.object_store:
        photos = list_image_files(DATA / args.photos)[:128]
        print("\n".join(object_store_table(featurizer, photos)), flush=True)
        return
    if args.store_shards:
        print("\n".join(store_table(args.store_shards)), flush=True)
        return
    print("\n".join(checksum_table()), flush=True)
    if args.checksums_only:
        return

    paths = list_image_files(DATA / args.photos)
    rows = [("local", 1)] + [
        (engine, n) for n in args.workers for engine in ("dask", "ray")
    ]
    results = {row: [] for row in rows}
    resumes = {row: [] for row in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = rows if repeat % 2 == 0 else rows[::-1]  # interleave
            for backend, n in order:
                folder = Path(tmp) / f"{backend}-{n}"
                measured = run_row(
                    backend, n, featurizer, paths, args.shard_size, folder
                )
                results[(backend, n)].append(measured)
                resumes[(backend, n)].append(
                    resume_row(backend, n, featurizer, paths, args.shard_size, folder)
                )
                print(f"  {backend} x{n} (repeat {repeat + 1}): {measured}", flush=True)

    machine = machine_name() if args.device == "cpu" else args.device
    print(
        f"\n### Embedding {len(paths)} photos ({args.photos}), {args.model} on "
        f"{args.device} ({machine}); batch {args.batch_size}, shards of "
        f"{args.shard_size}; median of {args.repeats}\n"
    )
    columns = ["start-up s", "embed s", "images/s", "CPU s"]
    print("| engine | workers | " + " | ".join(columns) + " | resume s | vs local |")
    print("|---|---|" + "---|" * (len(columns) + 2))
    local_rate = statistics.median(r["images/s"] for r in results[("local", 1)])
    for backend, n in rows:
        medians = {
            c: statistics.median(r[c] for r in results[(backend, n)]) for c in columns
        }
        resume = statistics.median(r[0] for r in resumes[(backend, n)])
        lost, total = resumes[(backend, n)][0][1:]
        cells = " | ".join(f"{medians[c]:.1f}" for c in columns)
        print(
            f"| {backend} | {n} | {cells} | {resume:.1f} ({lost}/{total} shards) "
            f"| {medians['images/s'] / local_rate:.2f}x |"
        )


if __name__ == "__main__":  # spawned Dask workers import this file again
    main()
