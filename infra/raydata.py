"""Ray Data glue shared by the data stages: one item per block, work in actor pools, rows back
as a typed Arrow table.

DESIGN.md section 3: Prefect orchestrates one task per stage; inside it Ray Data streams items
(one video per Ray task, bounded memory). Model-bearing workers are callable classes so that
models load once per actor, not once per video.
"""

from __future__ import annotations

import pickle
from typing import Any

import pyarrow as pa


class _FlatMapAdapter:
    """Wraps a worker class so Ray Data sees ``row -> list[row]``; a worker returns plain dicts."""

    def __init__(self, worker_cls: type, kwargs: dict[str, Any]):
        self.worker = worker_cls(**kwargs)

    def __call__(self, row: dict) -> list[dict]:
        # Rows travel pickled, one record per item: Ray infers Arrow types per block, and a block
        # whose column happens to be all-null would not concatenate with the others.
        return [{"rows": pickle.dumps(list(self.worker(dict(row))))}]


def flat_map_items(
    items: list[dict],
    worker_cls: type,
    worker_kwargs: dict[str, Any],
    schema: pa.Schema,
    *,
    concurrency: int | None = None,
    num_cpus: float = 1.0,
) -> pa.Table:
    """Run ``worker_cls(**worker_kwargs)(item) -> list[row]`` over ``items`` on Ray Data and
    return all rows as a table with ``schema`` (row order = item order, then worker order)."""
    import ray
    import ray.data

    if not items:
        return schema.empty_table()
    if concurrency is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        concurrency = max(1, min(len(items), int(cpus // max(num_cpus, 1e-3))))
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.flat_map(
        _FlatMapAdapter,
        fn_constructor_kwargs={"worker_cls": worker_cls, "kwargs": worker_kwargs},
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
    )
    rows: list[dict] = []
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for payload in batch.column("rows").to_pylist():
            rows.extend(pickle.loads(payload))
    return pa.Table.from_pylist(rows, schema=schema)
