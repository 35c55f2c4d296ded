"""embed_to_parquet: embed a list of image files shard by shard on this
machine, a Ray cluster or a Dask cluster, resumably.

The engine only schedules, places work on GPUs and retries lost workers;
resuming never depends on an engine's own checkpointing: the shard files
on disk are the state (see ``_parquet_shards``).
"""

import logging
import os
from collections import deque
from numbers import Integral

from tqdm.auto import tqdm

from ._base import warn_unused_parameters
from ._featurizer import CLIPFeaturizer
from ._images import progress_shown
from ._parquet_shards import (
    BEYOND_THE_LAST,
    ShardsFailedError,
    check_manifest,
    check_path_inputs,
    describe_worker,
    embed_shard,
    finished_shards,
    job_fields,
    output_location,
    read_manifest,
    require,
    shard_bounds,
    shard_count,
    write_manifest,
)
from ._warnings import warn

BACKENDS = ("local", "ray", "dask")


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
    progress="auto",
):
    """Embed image files into a folder of Parquet shards, resumably.

    Shard ``i`` holds ``inputs[i * shard_size:(i + 1) * shard_size]``. Each
    worker loads the CLIP model once for the whole job and runs the
    unchanged ``featurizer`` on one shard at a time, writing
    ``part-000123.parquet`` under a temporary name and renaming it when
    complete. Running the same call again computes only the shards that are
    missing (after a crash, a lost node or Ctrl-C); a folder that holds
    another job is refused.

    Parameters
    ----------
    featurizer : CLIPFeaturizer
        Its model, weights, precision, normalisation, batch size and
        quantisation are used on every worker; ``cache_dir``, ``memmap_dir``
        and ``progress`` are not (workers write shards instead), and
        ``on_error`` is always ``"nan"``: unreadable files become error rows.
    inputs : sequence of str or path
        Image file paths, readable by every worker (a shared file system).
        The order is the order of the store's rows.
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
        fsspec options for ``output_dir`` (credentials, endpoints).
    progress : bool or "auto", default="auto"
        A progress bar counting images and shards (``"auto"``: on a terminal).

    Returns
    -------
    store : EmbeddingStore
        The finished store.

    Raises
    ------
    ManifestMismatchError
        ``output_dir`` holds another job (other inputs, model, shard size...).
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
    from ._embedding_store import EmbeddingStore

    if not isinstance(featurizer, CLIPFeaturizer):
        raise TypeError(
            f"featurizer must be a CLIPFeaturizer, got {type(featurizer).__name__}."
        )
    featurizer._validate_params()
    warn_unused_parameters(
        featurizer,
        ["cache_dir", "memmap_dir"],
        "in embed_to_parquet: workers write Parquet shards (copy them into a "
        "cache with EmbeddingStore.to_embedding_cache)",
    )
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if not isinstance(shard_size, Integral) or isinstance(shard_size, bool):
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}.")
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}.")
    if n_workers is not None and (
        not isinstance(n_workers, Integral)
        or isinstance(n_workers, bool)
        or n_workers < 1
    ):
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}.")
    if backend == "local" and n_workers not in (None, 1):
        raise ValueError(
            "n_workers applies to the 'ray' and 'dask' backends; the local backend "
            "embeds in this process (set the featurizer's num_workers for decoding)."
        )
    if backend == "local" and address is not None:
        raise ValueError("address applies to the 'ray' and 'dask' backends only.")
    if worker_resources != "auto" and not isinstance(worker_resources, dict):
        raise ValueError(
            f"worker_resources must be a dict or 'auto', got {worker_resources!r}."
        )
    if backend == "local" and worker_resources != "auto":
        raise ValueError("worker_resources applies to the 'ray' and 'dask' backends.")

    paths = check_path_inputs(inputs)
    require("pyarrow")  # the shards' format: checked before any work
    fs, root = output_location(output_dir, storage_options)
    expected = job_fields(featurizer, paths, shard_size)
    manifest = read_manifest(fs, root)
    if manifest is None:
        _refuse_foreign_shards(fs, root, output_dir)
        # Claimed before any engine starts: a second job started on the same
        # folder meanwhile finds this manifest and is refused (the cache key
        # comes from the workers, once they are up).
        if not write_manifest(
            fs, root, {**expected, "cache_key": None}, exclusive=True
        ):
            manifest = read_manifest(fs, root)
    if manifest is not None:
        check_manifest(manifest, expected, output_dir)
    else:
        manifest = {**expected, "cache_key": None}
    done = set()
    if manifest["cache_key"] is not None:
        # Every page of every finished shard is read against its checksum:
        # a damaged shard is computed again, never kept.
        done, problems = finished_shards(
            fs, root, manifest, paths=paths, verify_data=True
        )
        _report_unusable(problems)
    n_shards = shard_count(len(paths), shard_size)
    todo = [shard for shard in range(n_shards) if shard not in done]
    if todo:
        params = featurizer.get_params()
        engine_class = {"local": _LocalEngine, "ray": _RayEngine, "dask": _DaskEngine}
        with engine_class[backend](
            params, n_workers, address, worker_resources
        ) as engine:
            cache_key = engine.cache_key()
            if manifest["cache_key"] is None:
                write_manifest(fs, root, {**expected, "cache_key": cache_key})
                manifest = read_manifest(fs, root)
            check_manifest(manifest, {"cache_key": cache_key}, output_dir)
            job = {"cache_key": cache_key, "inputs_sha256": expected["inputs_sha256"]}
            tasks = []
            for shard in todo:
                start, stop = shard_bounds(shard, shard_size, len(paths))
                tasks.append(
                    (
                        params,
                        paths[start:stop],
                        shard,
                        start,
                        fs.unstrip_protocol(root),
                        job,
                        storage_options,
                    )
                )
            failures = _run(engine, tasks, len(paths), n_shards, progress)
        if failures:
            raise ShardsFailedError(failures, n_shards, output_dir)
    return EmbeddingStore(output_dir, storage_options=storage_options)


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
    """Run the shard tasks; return ``{shard: error message}`` of failures."""
    rows_todo = sum(len(task[1]) for task in tasks)
    show = progress_shown(progress)
    bar = tqdm(
        total=n_inputs,
        initial=n_inputs - rows_todo,
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


class _LocalEngine:
    """Shards one after the other in this process (the reference)."""

    def __init__(self, params, n_workers, address, worker_resources):
        self._params = params

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def cache_key(self):
        return describe_worker(self._params)["cache_key"]

    def map(self, tasks):
        for task in tasks:
            try:
                yield task[2], embed_shard(*task)
            except Exception as exc:  # noqa: BLE001 - reported per shard
                yield task[2], exc


class RayShardWorker:
    """A Ray actor: loads the model once, then embeds shard after shard."""

    def __init__(self, params):
        self._params = params

    def describe(self):
        return describe_worker(self._params)

    def embed(self, *task):
        return embed_shard(*task, pooled=True)


class _ProcessState:
    """Undo what starting a cluster in this process changes in it: Dask's
    LocalCluster sets OMP_NUM_THREADS=1 and more in ``os.environ`` (every
    later subprocess would inherit them), ray.init sets RAY_* variables and
    its logger's level.
    """

    def __init__(self, *loggers):
        self._environ = dict(os.environ)
        self._levels = [
            (logger, logger.level) for logger in map(logging.getLogger, loggers)
        ]

    def restore(self):
        for name in set(os.environ) - set(self._environ):
            del os.environ[name]
        os.environ.update(self._environ)
        for logger, level in self._levels:
            logger.setLevel(level)


class _RayEngine:
    def __init__(self, params, n_workers, address, worker_resources):
        self._ray = ray = require("ray")
        self._started = None
        if ray.is_initialized():
            if address is not None:
                raise ValueError(
                    "Ray is already initialised in this process, so address="
                    f"{address!r} cannot take effect; pass address=None to use "
                    "it, or call ray.shutdown() first."
                )
        else:
            self._started = _ProcessState("ray")
            try:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
            except BaseException:
                self._started.restore()
                raise
        try:
            self._actors = self._start_actors(params, n_workers, worker_resources)
        except BaseException:
            self.__exit__()
            raise

    def _start_actors(self, params, n_workers, worker_resources):
        ray = self._ray
        total = ray.cluster_resources()
        gpus = int(total.get("GPU", 0))
        if worker_resources == "auto":
            wants_gpu = gpus > 0 and not str(params["device"]).startswith("cpu")
            worker_resources = {"num_gpus": 1} if wants_gpu else {"num_cpus": 1}
        if worker_resources.get("num_gpus"):
            fit = gpus / worker_resources["num_gpus"]
        else:
            fit = total.get("CPU", 1) / worker_resources.get("num_cpus", 1)
        n_actors = n_workers or max(1, int(fit + 1e-9))
        needs = {
            "GPU": worker_resources.get("num_gpus", 0),
            "CPU": worker_resources.get("num_cpus", 1),
            **worker_resources.get("resources", {}),
        }
        for resource, need in needs.items():
            if need * n_actors > total.get(resource, 0):
                raise ValueError(
                    f"{n_actors} Ray workers needing {need:g} {resource} each need "
                    f"{need * n_actors:g} {resource}; the cluster has "
                    f"{total.get(resource, 0):g}. Lower n_workers or change "
                    "worker_resources."
                )
        actor_class = ray.remote(RayShardWorker).options(
            max_restarts=2, max_task_retries=2, **worker_resources
        )
        return [actor_class.remote(params) for _ in range(max(1, n_actors))]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for actor in getattr(self, "_actors", ()):
            self._ray.kill(actor)
        if self._started is not None:
            self._ray.shutdown()
            self._started.restore()
        return False

    def cache_key(self):
        described = self._ray.get([actor.describe.remote() for actor in self._actors])
        return _one_cache_key(described)

    def map(self, tasks):
        ray = self._ray
        queue = deque(tasks)
        pending, live = {}, list(self._actors)

        def submit(actor):
            task = queue.popleft()
            pending[actor.embed.remote(*task)] = (actor, task)

        # Two shards in flight per actor: the next one is queued while the
        # current one is written.
        for _ in range(2):
            for actor in live:
                if queue:
                    submit(actor)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor, task = pending.pop(ref)
            try:
                yield task[2], ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                if actor in live:
                    live.remove(actor)
                yield task[2], exc
                continue
            except Exception as exc:  # noqa: BLE001 - reported per shard
                yield task[2], exc
            if queue and actor in live:
                submit(actor)
            elif queue and not pending:
                break
        for task in queue:
            yield task[2], RuntimeError("no Ray worker left alive to run this shard")


class _DaskEngine:
    def __init__(self, params, n_workers, address, worker_resources):
        self._distributed = distributed = require("distributed")
        self._params = params
        self._owned = []
        self._started = None
        try:
            self._connect(distributed, n_workers, address)
            self._resources = self._checked_resources(worker_resources)
        except BaseException:
            self.__exit__()
            raise

    def _connect(self, distributed, n_workers, address):
        if address is not None:
            self._client = distributed.Client(address)
            self._owned.append(self._client)
        else:
            try:
                self._client = distributed.default_client()
            except ValueError:
                # Our own cluster: its scheduler and nannies run in this
                # process and log every worker start and stop at INFO.
                self._started = _ProcessState("distributed")
                logging.getLogger("distributed").setLevel(logging.WARNING)
                cluster = distributed.LocalCluster(
                    n_workers=n_workers or os.cpu_count() or 1,
                    threads_per_worker=1,
                    processes=True,
                    # Any free port: even without a dashboard the scheduler's
                    # HTTP server binds one, 8787 by default, which another
                    # cluster may hold.
                    dashboard_address=":0",
                )
                self._owned.append(cluster)
                self._client = distributed.Client(cluster)
                self._owned.insert(0, self._client)
                return
        if n_workers is not None:
            raise ValueError(
                "n_workers sizes the LocalCluster that embed_to_parquet starts; "
                "with an existing Dask cluster, scale the cluster itself."
            )

    def _checked_resources(self, worker_resources):
        workers = self._client.scheduler_info().get("workers", {}).values()
        offered = [worker.get("resources", {}) for worker in workers]
        if worker_resources == "auto":
            return {"GPU": 1} if any(r.get("GPU") for r in offered) else None
        if worker_resources and not any(
            all(r.get(name, 0) >= need for name, need in worker_resources.items())
            for r in offered
        ):
            raise ValueError(
                f"no Dask worker offers worker_resources={worker_resources} (the "
                f"workers offer {offered}); the shards would wait forever. Start "
                "workers with --resources, or change worker_resources."
            )
        return worker_resources or None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for owned in self._owned:
            owned.close()
        if self._started is not None:
            self._started.restore()
        return False

    def cache_key(self):
        future = self._client.submit(
            describe_worker, self._params, resources=self._resources, pure=False
        )
        return future.result()["cache_key"]

    def map(self, tasks):
        futures = {
            self._client.submit(
                embed_shard,
                *task,
                pooled=True,
                resources=self._resources,
                pure=False,
                key=f"sklearn-clip-shard-{task[2]}-{os.urandom(4).hex()}",
            ): task[2]
            for task in tasks
        }
        for future in self._distributed.as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as exc:  # noqa: BLE001 - reported per shard
                yield futures[future], exc
            finally:
                future.release()


def _one_cache_key(described):
    keys = {entry["cache_key"] for entry in described}
    if len(keys) > 1:
        devices = sorted(
            {f"{entry['worker']} on {entry['device']}" for entry in described}
        )
        raise RuntimeError(
            "the workers compute embeddings with different cache keys (device "
            f"kinds or precisions differ): {', '.join(devices)}. Place the job on "
            "one kind of worker, or set the featurizer's device and precision."
        )
    return keys.pop()
