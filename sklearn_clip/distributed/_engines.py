"""The engines that run an embedding job's shards: this process, a Ray
cluster (one long-lived actor per worker) or a Dask cluster (tasks on
long-lived workers). Each yields ``(shard, summary or exception)``.
"""

import logging
import os
from collections import deque

from ._format import require
from ._worker import describe_worker, embed_shard


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


#: ``backend`` name -> engine class.
ENGINES = {"local": _LocalEngine, "ray": _RayEngine, "dask": _DaskEngine}
