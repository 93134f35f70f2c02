"""Ray Data glue shared by the data stages: one item per block, work in actor pools, rows back
as a typed Arrow table.

docs/architecture.md, "The stage contract": Prefect orchestrates one task per stage; inside it Ray Data streams items
(one video per Ray task, bounded memory). Model-bearing workers are callable classes so that
models load once per actor, not once per video.
"""

from __future__ import annotations

import pickle
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field


class StageResources(BaseModel):
    """What one actor of a stage's pool reserves on the cluster (``ray.stages.<stage>`` in a profile).
    Unset fields keep the stage's own default; GPU profiles give model stages ``num_gpus`` so Ray places
    their actors on GPU nodes (and sets CUDA_VISIBLE_DEVICES)."""

    model_config = ConfigDict(extra="forbid")
    actors: int | None = Field(None, ge=1, description="Actor pool size; None = the stage's default")
    num_cpus: float | None = Field(None, gt=0)
    num_gpus: float | None = Field(None, ge=0)
    memory_gb: float | None = Field(None, gt=0, description="Heap memory reserved per actor (Ray schedules on it)")
    custom: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources per actor")


# The stage each pool's worker class serves (the keys of ``ray.stages``).
STAGE_OF_WORKER = {"CorpusWorker": "corpus", "IngestWorker": "ingest", "SegmentWorker": "segment",
                   "ClipsWorker": "clips", "ScoreWorker": "score", "CaptionWorker": "caption",
                   "ZeroShotWorker": "balance", "PairsWorker": "pairs", "LatentWorker": "latents"}
_RESOURCES: dict[str, StageResources] = {}


def configure_resources(stages: dict[str, StageResources]) -> None:
    """Per-stage actor resources for this driver process (called where Ray is initialised)."""
    unknown = sorted(set(stages) - set(STAGE_OF_WORKER.values()))
    if unknown:
        raise ValueError(f"ray.stages: unknown stage(s) {unknown}; allowed: {sorted(set(STAGE_OF_WORKER.values()))}")
    _RESOURCES.clear()
    _RESOURCES.update(stages)


def _resources_for(worker_cls: type) -> StageResources:
    return _RESOURCES.get(STAGE_OF_WORKER.get(worker_cls.__name__, ""), StageResources())


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


def flat_map_rows(
    items: list[Any],
    worker_cls: type,
    worker_kwargs: dict[str, Any],
    *,
    concurrency: int | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    progress: str | None = None,
) -> list[Any]:
    """Run ``worker_cls(**worker_kwargs)(item) -> list[row]`` over ``items`` on Ray Data and return
    every row as the worker made it (row order = item order, then worker order). ``num_gpus`` > 0
    makes the pool's actors GPU actors (Ray sets their CUDA_VISIBLE_DEVICES). ``progress``: a
    driver-side bar with that label, one step per item done."""
    import ray
    import ray.data

    if not items:
        return []
    res = _resources_for(worker_cls)  # the profile's ray.stages.<stage> overrides the caller's defaults
    num_cpus = res.num_cpus if res.num_cpus is not None else num_cpus
    num_gpus = res.num_gpus if res.num_gpus is not None else num_gpus
    if res.actors is not None:
        concurrency = min(res.actors, len(items))
    if concurrency is None:
        cluster = ray.cluster_resources()
        fits = int(cluster.get("CPU", 1) // max(num_cpus, 1e-3))
        if num_gpus:  # a fixed-size pool waits for all its actors: never more GPU actors than the cluster's GPUs
            fits = min(fits, int(cluster.get("GPU", 0) // num_gpus))
        concurrency = max(1, min(len(items), fits))
    records = [{"item": pickle.dumps(item)} for item in items]
    ds = ray.data.from_items(records, override_num_blocks=len(records))
    ds = ds.flat_map(
        _FlatMapAdapter,
        fn_constructor_kwargs={"worker_cls": worker_cls, "kwargs": worker_kwargs},
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
        # Ray Data restarts a dead actor and retries its tasks (max_restarts / max_task_retries -1 by default
        # for actor pools): a lost node costs the items in flight, not the stage.
        **({"memory": int(res.memory_gb * 2**30)} if res.memory_gb else {}),
        **({"resources": dict(res.custom)} if res.custom else {}),
    )
    from tqdm import tqdm

    rows: list[Any] = []
    with tqdm(total=len(records), desc=progress, unit="item", disable=progress is None, dynamic_ncols=True) as bar:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for payload in batch.column("rows").to_pylist():
                rows.extend(pickle.loads(payload))
            bar.update(batch.num_rows)
    return rows


def flat_map_items(
    items: list[Any],
    worker_cls: type,
    worker_kwargs: dict[str, Any],
    schema: pa.Schema,
    *,
    concurrency: int | None = None,
    num_cpus: float = 1.0,
) -> pa.Table:
    """:func:`flat_map_rows` with the rows (dicts) returned as a table with ``schema``."""
    rows = flat_map_rows(items, worker_cls, worker_kwargs, concurrency=concurrency, num_cpus=num_cpus)
    return pa.Table.from_pylist(rows, schema=schema)
