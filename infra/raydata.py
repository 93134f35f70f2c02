"""Ray Data glue shared by the data stages: one item per block, work in actor pools, rows back
as a typed Arrow table.

docs/architecture.md, "The stage contract": Prefect orchestrates one task per stage; inside it Ray Data streams items
(one video per Ray task, bounded memory). Model-bearing workers are callable classes so that
models load once per actor, not once per video.
"""

from __future__ import annotations

import pickle
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from infra.config_base import StageResources

if TYPE_CHECKING:
    from infra.shards import Shards

__all__ = ["ResourceError", "StageResources", "actor_options", "check_cluster_has", "flat_map_items", "flat_map_rows",
           "local_device"]


class ResourceError(RuntimeError):
    """A stage asks for a resource that no node of the Ray cluster has: its actors would wait forever."""


# A node that is coming back (a lost worker restarted by its supervisor) gets this long to rejoin before a
# stage that needs its resources fails.
RESOURCE_WAIT_S = 60.0


def actor_options(resources: StageResources) -> dict[str, Any]:
    """Ray's per-actor options for a stage's declared resources (None = the raydata default)."""
    opts: dict[str, Any] = {"num_cpus": resources.num_cpus if resources.num_cpus is not None else 1.0,
                            "num_gpus": resources.num_gpus or 0.0}
    if resources.memory_gb:
        opts["memory"] = int(resources.memory_gb * 2**30)
    if resources.custom:
        opts["resources"] = dict(resources.custom)
    return opts


def check_cluster_has(stage: str, opts: dict[str, Any], cluster: dict[str, float]) -> None:
    """Fail, naming the stage and the resource, when no cluster capacity could ever place one actor
    (Ray would leave the pool pending without an error)."""
    wanted = {"CPU": opts["num_cpus"], "GPU": opts["num_gpus"], "memory": opts.get("memory", 0),
              **opts.get("resources", {})}
    for name, amount in wanted.items():
        if amount and cluster.get(name, 0) < amount:
            raise ResourceError(
                f"stage {stage}: each actor asks for {name}={amount:g} but the Ray cluster has "
                f"{cluster.get(name, 0):g}; start Ray with it (a GPU node, `ray start --resources`) or lower "
                f"the stage's `resources` in the profile / with --set")


def local_device(stage: str, resources: StageResources, default: str = "cpu") -> str:
    """The torch device of a stage that runs in the flow's own process (reward, dpo): CUDA when it declares
    GPUs, failing now, naming the stage, when this process sees fewer; else ``default``."""
    if not resources.wants_gpu():
        return default
    import torch

    if torch.cuda.device_count() < resources.num_gpus:
        raise ResourceError(f"stage {stage}: declares num_gpus={resources.num_gpus:g} but this process sees "
                            f"{torch.cuda.device_count()} CUDA device(s); run the flow on a GPU node or set the "
                            f"stage's resources.num_gpus to 0")
    return "cuda"


class _FlatMapAdapter:
    """Wraps a worker class so Ray Data sees ``row -> list[row]``; a worker takes and returns plain
    Python objects."""

    def __init__(self, worker_cls: type, kwargs: dict[str, Any]):
        self.worker = worker_cls(**kwargs)

    def __call__(self, record: dict) -> list[dict]:
        # Items and rows travel pickled, one record per item: Ray infers Arrow types per block, so a
        # block whose column happens to be all-null (an error row) would not merge with the others,
        # and nested values (lists of shot rows, numpy arrays) would be coerced.
        return [{"rows": pickle.dumps(list(self.worker(pickle.loads(record["item"]))))}]


class _ShardAdapter:
    """Wraps a worker class so each item's rows go straight to a Parquet shard (``infra.shards``); only
    the counts travel back to the driver."""

    def __init__(self, worker_cls: type, kwargs: dict[str, Any], schema: pa.Schema, folder: str):
        self.worker, self.schema, self.folder = worker_cls(**kwargs), schema, folder

    def __call__(self, record: dict) -> list[dict]:
        from infra.shards import write_part

        rows = list(self.worker(pickle.loads(record["item"])))
        return [write_part(rows, self.schema, self.folder, record["index"])]


def _pool(items: list[Any], resources: StageResources, stage: str) -> tuple[dict[str, Any], int]:
    """The actors' options and how many actors, once the cluster can place one (waits for a node that is
    coming back, then fails naming the stage and the resource)."""
    import ray

    opts = actor_options(resources)
    deadline = time.monotonic() + RESOURCE_WAIT_S
    while True:
        cluster = ray.cluster_resources()
        try:
            check_cluster_has(stage, opts, cluster)
            break
        except ResourceError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(2.0)
    if resources.actors is not None:
        return opts, min(resources.actors, len(items))
    fits = int(cluster.get("CPU", 1) // max(opts["num_cpus"], 1e-3))
    if opts["num_gpus"]:  # a fixed-size pool waits for all its actors: never more GPU actors than the cluster's GPUs
        fits = min(fits, int(cluster.get("GPU", 0) // opts["num_gpus"]))
    return opts, max(1, min(len(items), fits))


def _results(items: list[Any], records: list[dict], adapter: type, adapter_kwargs: dict[str, Any],
             resources: StageResources, stage: str, progress: str | None):
    """``adapter`` over ``records`` (one per item) in the stage's actor pool; yields the result batches as
    they come, with a driver-side bar labelled ``progress`` (none when None), one step per item done."""
    import ray.data
    from tqdm import tqdm

    opts, concurrency = _pool(items, resources, stage)
    ds = ray.data.from_items(records, override_num_blocks=len(records)).flat_map(
        adapter,
        fn_constructor_kwargs=adapter_kwargs,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        # Ray Data restarts a dead actor and retries its tasks (max_restarts / max_task_retries -1 by default
        # for actor pools): a lost node costs the items in flight, not the stage.
        **{**opts, "num_gpus": opts["num_gpus"] or None},
    )
    with tqdm(total=len(records), desc=progress, unit="item", disable=progress is None, dynamic_ncols=True) as bar:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            yield batch
            bar.update(batch.num_rows)


def flat_map_rows(
    items: list[Any],
    worker_cls: type,
    worker_kwargs: dict[str, Any],
    resources: StageResources,
    *,
    stage: str,
    progress: str | None = None,
) -> list[Any]:
    """Run ``worker_cls(**worker_kwargs)(item) -> list[row]`` over ``items`` on Ray Data and return
    every row as the worker made it (row order = item order, then worker order). Each actor of the
    pool reserves the ``resources`` the stage's config declares (``stage`` names it in errors); GPU
    actors get their CUDA_VISIBLE_DEVICES from Ray. ``progress``: a driver-side bar with that label,
    one step per item done."""
    if not items:
        return []
    records = [{"item": pickle.dumps(item)} for item in items]
    rows: list[Any] = []
    for batch in _results(items, records, _FlatMapAdapter, {"worker_cls": worker_cls, "kwargs": worker_kwargs},
                          resources, stage, progress):
        for payload in batch.column("rows").to_pylist():
            rows.extend(pickle.loads(payload))
    return rows


def flat_map_items(
    items: list[Any],
    worker_cls: type,
    worker_kwargs: dict[str, Any],
    schema: pa.Schema,
    resources: StageResources,
    *,
    stage: str,
    shard_dir: str | None = None,
    progress: str | None = None,
) -> pa.Table | Shards:
    """:func:`flat_map_rows` with the rows (dicts) returned as a table with ``schema``; with ``shard_dir``,
    each worker writes its item's rows as a shard there and the driver gets a :class:`~infra.shards.Shards`
    handle instead (its memory does not grow with the rows; ``publish`` streams the shards)."""
    if shard_dir is None:
        rows = flat_map_rows(items, worker_cls, worker_kwargs, resources, stage=stage, progress=progress)
        return pa.Table.from_pylist(rows, schema=schema)
    from infra.shards import Shards

    shards = Shards(shard_dir, schema)
    if not items:
        return shards
    records = [{"item": pickle.dumps(item), "index": i} for i, item in enumerate(items)]
    kwargs = {"worker_cls": worker_cls, "kwargs": worker_kwargs, "schema": schema, "folder": shard_dir}
    for batch in _results(items, records, _ShardAdapter, kwargs, resources, stage, progress):
        for done in batch.to_pylist():
            shards.counts[done["index"]] = done["rows"]
    return shards
