"""embed_to_parquet: embed a list of image files shard by shard on this
machine, a Ray cluster or a Dask cluster, resumably.

The engine only schedules, places work on GPUs and retries lost workers;
resuming never depends on an engine's own checkpointing: the shard files
on disk are the state (see ``_format``).
"""

import os
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

from sklearn.base import clone
from tqdm.auto import tqdm

from .._base import warn_unused_parameters
from .._compat import Interval, StrOptions, validate_params
from .._featurizer import CLIPFeaturizer
from .._images import progress_shown
from .._warnings import warn
from ._engines import ENGINES
from ._faults import RETRY_CHOICES, rows_to_retry, summary_line
from ._format import (
    BEYOND_THE_LAST,
    MANIFEST_NAME,
    TARS,
    ShardsFailedError,
    check_manifest,
    check_path_inputs,
    finished_shards,
    inputs_layout,
    job_fields,
    job_shape,
    output_location,
    part_name,
    read_manifest,
    require,
    shard_bounds,
    shard_count,
    shard_files,
    write_manifest,
)
from ._store import EmbeddingStore
from ._tars import archive_version
from ._worker import READ_THREADS

BACKENDS = ("local", "ray", "dask")


@validate_params(
    {
        "featurizer": [CLIPFeaturizer],
        # Any iterable of paths; a single path is refused by name below.
        "inputs": [Iterable],
        "output_dir": [str, os.PathLike],
        "backend": [StrOptions(set(BACKENDS))],
        "shard_size": [Interval(Integral, 1, None, closed="left")],
        "n_workers": [Interval(Integral, 1, None, closed="left"), None],
        "address": [str, None],
        "worker_resources": [dict, StrOptions({"auto"})],
        "storage_options": [dict, None],
        "retry_errors": [StrOptions(set(RETRY_CHOICES))],
        "progress": ["boolean", StrOptions({"auto"})],
    },
    prefer_skip_nested_validation=True,
)
def embed_to_parquet(
    featurizer,
    inputs,
    output_dir,
    *,
    backend="local",
    shard_size=4096,
    n_workers=None,
    address=None,
    worker_resources="auto",
    storage_options=None,
    retry_errors="transient",
    progress="auto",
):
    """Embed image files into a folder of Parquet shards, resumably.

    Shard ``i`` holds ``inputs[i * shard_size:(i + 1) * shard_size]``, or,
    when every input is a WebDataset ``.tar`` archive, the samples of
    archive ``i`` (one row per sample, identified as ``"<archive>#<key>"``;
    ``shard_size`` has no effect then). Each
    worker loads the CLIP model once for the whole job and runs the
    unchanged ``featurizer`` on one shard at a time, writing
    ``part-000123.parquet`` under a temporary name and renaming it when
    complete. Running the same call again computes only the shards that are
    missing (after a crash, a lost node or Ctrl-C) and the rows that failed
    transiently; a folder that holds another job is refused.

    Every input ends as an embedding or as an error row with its reason and
    its kind: ``"transient"`` (connection failure, timeout, 5xx, throttling,
    refused credentials; tried 3 times with backoff within the run) or
    ``"permanent"`` (not an image, undecodable, no such file). A job that
    ends with transient error rows warns, and the store's ``summary()``
    counts them.

    Parameters
    ----------
    featurizer : CLIPFeaturizer
        Its model, weights, precision, normalisation, batch size and
        quantisation are used on every worker; ``cache_dir``, ``memmap_dir``
        and ``progress`` are not (workers write shards instead), and
        ``on_error`` is always ``"nan"``: unreadable files become error rows.
    inputs : sequence of str or path
        Image file paths readable by every worker (a shared file system), or
        URLs read through fsspec with the featurizer's ``storage_options``
        (``s3://``, ``gs://``, ``az://``, ``https://``, ...). Each input is
        read once: its bytes are hashed and decoded from that read. The
        order is the order of the store's rows.
    output_dir : str or path
        Local folder or fsspec URL (``s3://bucket/run``, ...) reachable from
        every worker; created if needed.
    backend : {"local", "ray", "dask"}, default="local"
        ``"local"``: shards one after the other in this process. ``"ray"``:
        one long-lived Ray actor per worker (connects to ``address``, else to
        the Ray instance of this process, else starts a local one). ``"dask"``:
        tasks on the Dask workers (connects to ``address``, else to the
        current ``distributed.Client``, else starts a ``LocalCluster``).
    shard_size : int, default=4096
        Images per shard: the unit of scheduling, writing and resuming. A
        multiple of the featurizer's ``batch_size`` gives the same batches,
        hence bit-identical embeddings, as one ``transform`` call.
    n_workers : int, default=None
        Ray: the number of actors (default: one per GPU of the cluster, else
        one per CPU). Dask: the workers of the ``LocalCluster`` started here
        (default: one per CPU core); an existing Dask cluster keeps its size,
        and setting ``n_workers`` with one raises. Local: must be None or 1.
    address : str, default=None
        Ray or Dask cluster address (``"ray://head:10001"``, ``"auto"``,
        ``"tcp://scheduler:8786"``).
    worker_resources : dict or "auto", default="auto"
        What each shard needs. Ray: actor options, e.g. ``{"num_gpus": 1}``;
        ``"auto"`` asks for one GPU per actor on clusters with GPUs, else one
        CPU. Dask: task resources, e.g. ``{"GPU": 1}`` for workers started
        with ``--resources GPU=1``; ``"auto"`` asks for ``{"GPU": 1}`` when
        the workers declare GPUs, else nothing.
    storage_options : dict, default=None
        fsspec options (credentials, endpoints) for ``output_dir`` and for
        the input URLs; the featurizer's own ``storage_options``, where set,
        take their place for the inputs (a bucket of images read with other
        credentials than the output's).
    retry_errors : {"transient", "all"}, default="transient"
        The error rows of finished shards that a re-run embeds again:
        those whose failure was transient (and those of shards written by
        sklearn-clip 0.2, which record no kind), or all of them.
    progress : bool or "auto", default="auto"
        A progress bar counting images and shards (``"auto"``: on a terminal).

    Returns
    -------
    store : EmbeddingStore
        The finished store.

    Raises
    ------
    ManifestMismatchError
        ``output_dir`` holds another job (other inputs, model, shard size...),
        or another job claimed it first (the claim is an atomic create of
        its ``_manifest.json``, conditional on object stores).
    ShardsFailedError
        Some shards failed; the others are kept and a re-run computes the rest.

    See Also
    --------
    EmbeddingStore : Read the embeddings back.
    CLIPBatchEmbedder : The same embedding step inside a Ray Data pipeline.

    Notes
    -----
    Each worker takes the featurizer's ``device``: ``"auto"`` gives every
    Ray actor its GPU (``num_gpus=1`` sets ``CUDA_VISIBLE_DEVICES``); run
    one Dask worker per GPU (``dask-cuda`` does). Every worker must resolve
    to the same device kind and precision, which the job's cache key
    records; a worker that differs fails its shards instead of mixing
    embeddings.

    With the Dask backend, spawned worker processes import the main module
    of a script again: keep the call under ``if __name__ == "__main__":``.

    Examples
    --------
    >>> from sklearn_clip import CLIPFeaturizer
    >>> from sklearn_clip.distributed import embed_to_parquet
    >>> featurizer = CLIPFeaturizer("ViT-B-32", pretrained="laion2b_s34b_b79k")
    >>> store = embed_to_parquet(
    ...     featurizer, paths, "s3://bucket/embeddings", backend="ray"
    ... )  # doctest: +SKIP
    >>> X = store.to_numpy(on_error="nan")  # doctest: +SKIP
    """
    clone(featurizer).fit()  # checks its parameters, on a copy
    warn_unused_parameters(
        featurizer,
        ["cache_dir", "memmap_dir"],
        "in embed_to_parquet: workers write Parquet shards (copy them into a "
        "cache with EmbeddingStore.to_embedding_cache)",
    )
    if backend == "local" and n_workers not in (None, 1):
        raise ValueError(
            "n_workers applies to the 'ray' and 'dask' backends; the local backend "
            "embeds in this process (set the featurizer's num_workers for decoding)."
        )
    if backend == "local" and address is not None:
        raise ValueError("address applies to the 'ray' and 'dask' backends only.")
    if backend == "local" and worker_resources != "auto":
        raise ValueError("worker_resources applies to the 'ray' and 'dask' backends.")

    if not os.fspath(output_dir).strip():
        raise ValueError(
            "output_dir is empty: give the folder or URL to write the store to "
            "(an empty path would write into the working directory)."
        )
    paths = check_path_inputs(inputs)
    require("pyarrow")  # the shards' format: checked before any work
    if inputs_layout(paths) == TARS and shard_size != 4096:
        warn(
            "embed_to_parquet: shard_size has no effect with .tar archives as inputs "
            "(each archive is one shard).",
            UserWarning,
        )
    fs, root = output_location(output_dir, storage_options)
    _check_bucket(fs, root, output_dir)
    expected = job_fields(featurizer, paths, shard_size)
    manifest = read_manifest(fs, root)
    claim = None
    if manifest is None:
        _refuse_foreign_shards(fs, root, output_dir)
        # Claimed before any engine starts, by an atomic create: a second
        # job started on the same folder meanwhile finds this manifest and
        # is refused (the cache key comes from the workers, once they are up).
        claim = uuid.uuid4().hex
        if not write_manifest(
            fs, root, {**expected, "cache_key": None, "claim": claim}, exclusive=True
        ):
            claim = None
            manifest = read_manifest(fs, root)
    try:
        store = _embed(
            featurizer,
            paths,
            output_dir,
            fs,
            root,
            expected,
            manifest,
            claim,
            backend=backend,
            n_workers=n_workers,
            address=address,
            worker_resources=worker_resources,
            storage_options=storage_options,
            retry_errors=retry_errors,
            progress=progress,
        )
    except BaseException:
        if claim is not None:
            _release(fs, root, claim)
        raise
    # Read by another instance: the store returned has read nothing yet.
    summary = EmbeddingStore(output_dir, storage_options=storage_options).summary()
    if summary["transient"]:
        warn(
            f"embed_to_parquet: {summary_line(summary)}. Rows that failed "
            "transiently are embedded again by running the same call again "
            "(once the store, network or credentials are back).",
            UserWarning,
        )
    return store


def _embed(
    featurizer,
    paths,
    output_dir,
    fs,
    root,
    expected,
    manifest,
    claim,
    *,
    backend,
    n_workers,
    address,
    worker_resources,
    storage_options,
    retry_errors,
    progress,
):
    """The job once the folder is claimed (``claim``: this run's token, or
    None when the folder held the job already).
    """
    if manifest is not None:
        check_manifest(manifest, expected, output_dir)
    else:
        manifest = {**expected, "cache_key": None, "claim": claim}
    done, repairs = set(), {}
    if manifest["cache_key"] is not None:
        # Every page of every finished shard is read against its checksum:
        # a damaged shard is computed again, never kept.
        done, problems = finished_shards(
            fs,
            root,
            manifest,
            paths=paths,
            verify_data=True,
            source_versions=_archive_versions(
                manifest, paths, featurizer.storage_options or storage_options
            ),
        )
        _report_unusable(problems)
        for shard in sorted(done):
            rows = rows_to_retry(fs, f"{root}/{part_name(shard)}", retry_errors)
            if rows and manifest.get("layout") == TARS:
                done.discard(shard)  # an archive is read again whole
            elif rows:
                repairs[shard] = rows
    n_shards = shard_count(manifest["n_inputs"], manifest["shard_size"])
    todo = [shard for shard in range(n_shards) if shard not in done or shard in repairs]
    if todo:
        params = featurizer.get_params()
        if params["storage_options"] is None:
            # One storage_options serves inputs and output.
            params["storage_options"] = storage_options
        with ENGINES[backend](params, n_workers, address, worker_resources) as engine:
            cache_key = engine.cache_key()
            if manifest["cache_key"] is None:
                write_manifest(
                    fs, root, {**expected, "cache_key": cache_key, "claim": claim}
                )
                manifest = read_manifest(fs, root)
            check_manifest(manifest, {"cache_key": cache_key}, output_dir)
            job = {
                "cache_key": cache_key,
                "inputs_sha256": expected["inputs_sha256"],
                "layout": manifest.get("layout"),
                "shape": job_shape(manifest),
                "run": uuid.uuid4().hex,
            }
            tasks = []
            for shard in todo:
                start, stop = shard_bounds(
                    shard, manifest["shard_size"], manifest["n_inputs"]
                )
                tasks.append(
                    (
                        params,
                        paths[start:stop],
                        shard,
                        start,
                        fs.unstrip_protocol(root),
                        job,
                        storage_options,
                        repairs.get(shard),
                    )
                )
            # The rows of tar archives are counted as they are read.
            n_rows = None if manifest.get("layout") == TARS else len(paths)
            failures = _run(engine, tasks, n_rows, n_shards, progress)
        if failures:
            raise ShardsFailedError(failures, n_shards, output_dir)
    return EmbeddingStore(output_dir, storage_options=storage_options)


def _archive_versions(manifest, paths, storage_options):
    """``{shard: version}`` of every tar archive now (None where it cannot
    be read: its shard is kept), read by threads; None for image files.
    """
    if manifest.get("layout") != TARS:
        return None

    def version(path):
        try:
            return archive_version(path, storage_options)
        except Exception:  # noqa: BLE001 - unreadable now: keep what was read
            return None

    with ThreadPoolExecutor(READ_THREADS) as pool:
        return dict(enumerate(pool.map(version, paths)))


def _check_bucket(fs, root, output_dir):
    """Refuse an output in a bucket that does not exist, naming it (instead
    of letting the file system try to create it).
    """
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if not set(protocols) & {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}:
        return
    bucket = root.split("/", 1)[0]
    try:
        exists = fs.exists(bucket)
    except PermissionError:
        return  # may not list it, may still write into it
    if not exists:
        raise FileNotFoundError(
            f"the bucket {bucket!r} of the output {os.fspath(output_dir)} does not "
            "exist (or these credentials cannot see it): create it, or check the "
            "name and storage_options."
        )


def _release(fs, root, claim):
    """Give the folder back after a failed run that wrote no shard: remove
    the manifest if it is still this run's claim.
    """
    try:
        if shard_files(fs, root):
            return
        manifest = read_manifest(fs, root)
        if manifest is not None and manifest.get("claim") == claim:
            fs.rm(f"{root}/{MANIFEST_NAME}")
    except Exception:  # noqa: BLE001 - the run's own error matters more
        pass


def _report_unusable(problems):
    """Warn about the part files that are not kept, and what happens to them."""
    ignored = [name for name, why in problems.items() if why == BEYOND_THE_LAST]
    redone = {name: why for name, why in problems.items() if why != BEYOND_THE_LAST}
    if redone:
        details = "; ".join(f"{name}: {why}" for name, why in list(redone.items())[:5])
        warn(
            f"{len(redone)} shard file(s) are not usable and are computed again: "
            f"{details}",
            UserWarning,
        )
    if ignored:
        warn(
            f"{len(ignored)} part file(s) are numbered beyond the last shard of this "
            f"job and are ignored (not part of the store): {', '.join(ignored[:5])}",
            UserWarning,
        )


def _refuse_foreign_shards(fs, root, output_dir):
    if fs.exists(root) and any(
        os.path.basename(name).startswith("part-") for name in fs.ls(root, detail=False)
    ):
        raise ValueError(
            f"{output_dir} holds part files but no _manifest.json: it is not a "
            "store of this package, or its manifest was deleted. Use a new folder."
        )


def _run(engine, tasks, n_inputs, n_shards, progress):
    """Run the shard tasks; return ``{shard: error message}`` of failures.
    ``n_inputs`` is None when the rows are counted as they are read.
    """
    rows_todo = sum(len(task[7] or task[1]) for task in tasks)
    show = progress_shown(progress)
    bar = tqdm(
        total=n_inputs,
        initial=0 if n_inputs is None else n_inputs - rows_todo,
        unit="img",
        desc="embedding",
        disable=not show,
    )
    finished = n_shards - len(tasks)
    failures = {}
    with bar:
        bar.set_postfix_str(f"{finished}/{n_shards} shards")
        for shard, outcome in engine.map(tasks):
            if isinstance(outcome, BaseException):
                failures[shard] = f"{type(outcome).__name__}: {outcome}".strip()
                continue
            finished += 1
            bar.update(outcome["rows"])
            bar.set_postfix_str(f"{finished}/{n_shards} shards")
    return failures
