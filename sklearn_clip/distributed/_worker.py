"""What every worker of an embedding job runs, whatever the engine: load the
model once, embed a shard with the unchanged featurizer (through its
contract: :func:`~sklearn_clip._featurizer.embed_items` and
:func:`~sklearn_clip._featurizer.embedding_key`), write the shard file.
"""

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._clip import embedding_dim, load_clip
from .._embedding_cache import content_key
from .._featurizer import CLIPFeaturizer, embed_items, embedding_key
from .._images import FailedRead, read_encoded
from .._remote import (
    PERMANENT,
    failure_kind,
    forget_hosts,
    protocol_of,
    with_timeouts,
)
from ._columns import ColumnReader, PathCell, is_column_input, read_path_cell
from ._format import TARS, embedding_matrix, read_shard_table, shard_table, write_shard
from ._tars import DamagedArchiveError, archive_version, iter_tar_samples


def worker_name():
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_featurizer(params):
    """A featurizer for a worker: no progress bars, caches or memmaps of the
    caller's machine; unreadable inputs become error rows.
    """
    params = {
        **params,
        "progress": False,
        "cache_dir": None,
        "memmap_dir": None,
        "on_error": "nan",
    }
    return CLIPFeaturizer(**params)


def load_worker(params):
    """The worker featurizer and its model, loaded here (once per process:
    ``load_clip`` caches it).
    """
    featurizer = worker_featurizer(params)
    return featurizer, load_clip(
        featurizer.model,
        featurizer.pretrained,
        featurizer.device,
        preprocess=featurizer.preprocess,
    )


def describe_worker(params):
    """Load the model here and return its cache key."""
    featurizer, clip = load_worker(params)
    return {
        "cache_key": embedding_key(featurizer, clip),
        "device": str(clip.device),
        "worker": worker_name(),
    }


#: Batches read ahead of the model: a shard's inputs are read in windows
#: of this many batches, the next window while the model embeds this one.
READ_AHEAD_BATCHES = 4
#: Reads at once: remote stores answer slowly but in parallel.
READ_THREADS = 16


def embed_inputs(featurizer, inputs):
    """Embed file paths or URLs with a worker featurizer, reading each input
    once: its bytes are hashed and decoded from the same read.

    Inputs are read in windows of :data:`READ_AHEAD_BATCHES` batches by
    :data:`READ_THREADS` threads, the next window while the model embeds
    this one, so remote latency hides behind the model and memory holds two
    windows, whatever the shard's size. Windows are whole batches, so the
    embeddings are those of one ``transform`` call over the inputs.

    Returns ``(embeddings, content hashes, errors, error kinds)``: float32
    rows (NaN where the input failed), the SHA-256 content key of each
    readable input (the key of the local embedding cache), the error message
    per row (``None`` where it succeeded) and whether each failure is
    ``"transient"`` or ``"permanent"`` (``None`` where it succeeded).
    URLs are read with the featurizer's ``timeout``; transient failures are
    tried again (see :func:`~sklearn_clip._remote.read_url`).
    """
    window = featurizer.batch_size * READ_AHEAD_BATCHES
    options = featurizer.storage_options
    timeout = featurizer.timeout
    column_inputs = [name for name in inputs if is_column_input(name)]
    columns = ColumnReader(_with_timeouts(column_inputs, options, timeout))

    def read(chunk):
        """The items of ``chunk``; each input's kind is its own: a file path
        or URL, or a cell of a Parquet column (whose value may be a path).
        """
        items = [None] * len(chunk)
        cells = [i for i, name in enumerate(chunk) if is_column_input(name)]
        for i, item in zip(cells, columns.read([chunk[i] for i in cells])):
            items[i] = item
        futures = {
            i: pool.submit(read_path_cell, item, options, timeout)
            if isinstance(item, PathCell)
            else pool.submit(read_encoded, chunk[i], options, timeout)
            for i, item in enumerate(items)
            if item is None or isinstance(item, PathCell)
        }
        for i, future in futures.items():
            items[i] = future.result()
        return items

    with ThreadPoolExecutor(READ_THREADS) as pool, ThreadPoolExecutor(1) as ahead:
        windows = (
            read(inputs[start : start + window])
            for start in range(0, len(inputs), window)
        )
        # The next window is read while this one is embedded.
        embeddings, hashes, errors, kinds, _ = _embed_windows(
            featurizer, _read_ahead(windows, ahead)
        )
    return embeddings, hashes, errors, kinds


def _with_timeouts(inputs, options, timeout):
    """The options of column files with timeouts, when they share one
    protocol (the timeouts' options differ between protocols).
    """
    protocols = {protocol_of(item) for item in inputs}
    if len(protocols) != 1:
        return options
    return with_timeouts(inputs[0], options, timeout, own_retries=False)


def embed_tar(featurizer, url):
    """Embed the samples of a WebDataset tar archive (a path or URL), read
    as a stream: one row per sample (the files sharing a key), in archive
    order, from its first image file (``.jpg``, ``.png``, ``.webp``, ...).

    Returns ``(embeddings, content hashes, errors, error kinds,
    identities)``; the identity of a row is ``"<archive>#<sample key>"``.
    The next window of samples is read while the model embeds this one.
    """
    window = featurizer.batch_size * READ_AHEAD_BATCHES
    options = with_timeouts(
        url, featurizer.storage_options, featurizer.timeout, own_retries=False
    )

    def windows():
        items, names = [], []
        for key, item in iter_tar_samples(url, options):
            items.append(item)
            names.append(f"{url}#{key}")
            if len(items) == window:
                yield items, names
                items, names = [], []
        if items:
            yield items, names

    with ThreadPoolExecutor(1) as pool:
        return _embed_windows(featurizer, _read_ahead(windows(), pool))


def _read_ahead(iterator, pool):
    """Yield from ``iterator`` while ``pool`` already reads its next item."""
    pending = pool.submit(next, iterator, None)
    while (item := pending.result()) is not None:
        pending = pool.submit(next, iterator, None)
        yield item


def _embed_windows(featurizer, windows):
    """Embed windows of read items (``items`` or ``(items, names)``);
    return the embeddings, content hashes, errors, error kinds and names of
    all rows. A failed read is as transient as its error; bytes that do not
    decode are a permanent failure.
    """
    parts, hashes, errors, kinds, names = [], [], [], [], []
    for window in windows:
        items, window_names = window if isinstance(window, tuple) else (window, None)
        part, failures = embed_items(featurizer, items)
        part = np.asarray(part, dtype=np.float32)
        window_errors = [None] * len(items)
        window_kinds = [None] * len(items)
        for offset, _, reason in failures:
            window_errors[offset] = reason
            item = items[offset]
            window_kinds[offset] = (
                failure_kind(item.error) if isinstance(item, FailedRead) else PERMANENT
            )
            part[offset] = np.nan
        parts.append(part)
        hashes += [content_key(item) for item in items]
        errors += window_errors
        kinds += window_kinds
        names += window_names or []
    dim = parts[0].shape[1] if parts else embedding_dim(featurizer.model)
    embeddings = np.concatenate(parts) if parts else np.empty((0, dim), np.float32)
    return embeddings, hashes, errors, kinds, names


#: The run of the last shard embedded here (hosts' health is per run).
_last_run = None


def embed_shard(
    params,
    paths,
    shard,
    first_row,
    root_url,
    job,
    storage_options,
    repair=None,
    pooled=False,
):
    """Embed one shard and write its Parquet file; what a worker runs.

    ``job``: the manifest's ``cache_key`` and ``inputs_sha256``, stamped on
    the file. ``repair``: offsets of the rows of a finished shard to embed
    again (its error rows a re-run retries); the other rows are kept from
    the shard's file, which is replaced by the repaired one. ``pooled``: this
    process is one of several workers sharing the node's cores, so on the
    CPU ``num_workers="auto"`` decodes with threads instead of starting
    DataLoader processes that would compete with the others.
    Returns a small summary (rows, errors, seconds, worker). Raises if this
    worker computes another cache key than the job's (a CPU worker in a GPU
    job, say), instead of writing embeddings that differ from the others.
    """
    started = time.perf_counter()
    global _last_run
    if job.get("run") != _last_run:
        forget_hosts()  # hosts down during an earlier run are tried again
        _last_run = job.get("run")
    featurizer, clip = load_worker(params)
    cache_key = job["cache_key"]
    here = embedding_key(featurizer, clip)
    if here != cache_key:
        raise RuntimeError(
            f"worker {os.getpid()} on {clip.device} computes embeddings with "
            f"cache key {here[:12]}..., not the job's {cache_key[:12]}... (another "
            "device kind or precision): every worker of a job must use the same "
            "device kind; set the featurizer's precision explicitly or place the "
            "job on one kind of worker."
        )
    if pooled and featurizer.num_workers == "auto" and clip.device.type == "cpu":
        featurizer.set_params(num_workers=0)
    version = None
    if repair:
        embeddings, hashes, errors, kinds = _repaired(
            featurizer, paths, shard, repair, root_url, storage_options
        )
        names = paths
    elif job.get("layout") == TARS:  # paths: the one archive of this shard
        options = featurizer.storage_options
        version = archive_version(paths[0], options)
        embeddings, hashes, errors, kinds, names = embed_tar(featurizer, paths[0])
        if archive_version(paths[0], options) != version:
            raise DamagedArchiveError(
                f"the tar archive {paths[0]} changed while it was read; no row of "
                "it is kept. Run the job again once it is no longer written to."
            )
        first_row = 0  # rows count within the archive; the store adds offsets
    else:
        embeddings, hashes, errors, kinds = embed_inputs(featurizer, paths)
        names = paths
    table = shard_table(first_row, names, hashes, embeddings, errors, kinds)
    write_shard(
        table, shard, paths, job, root_url, storage_options, source_version=version
    )
    return {
        "shard": shard,
        "rows": len(repair) if repair else len(names),
        "errors": sum(error is not None for error in errors),
        "transient": sum(kind != PERMANENT for kind in kinds if kind is not None),
        "seconds": time.perf_counter() - started,
        "worker": worker_name(),
    }


def _repaired(featurizer, paths, shard, rows, root_url, storage_options):
    """The columns of a finished shard with ``rows`` (offsets) embedded
    again: ``(embeddings, hashes, errors, kinds)``.
    """
    from ._format import output_location, part_name

    fs, root = output_location(root_url, storage_options)
    table = read_shard_table(fs, f"{root}/{part_name(shard)}")
    embeddings = embedding_matrix(
        table.column("embedding"), table.schema.field("embedding").type.list_size
    ).copy()
    hashes = table.column("content_sha256").to_pylist()
    errors = table.column("error").to_pylist()
    kinds = (
        table.column("error_kind").to_pylist()
        if "error_kind" in table.column_names
        else [None] * len(errors)
    )
    again, again_hashes, again_errors, again_kinds = embed_inputs(
        featurizer, [paths[row] for row in rows]
    )
    for i, row in enumerate(rows):
        embeddings[row] = again[i]
        hashes[row] = again_hashes[i]
        errors[row] = again_errors[i]
        kinds[row] = again_kinds[i]
    return embeddings, hashes, errors, kinds
