"""Stage outputs written by the workers (infra/shards.py): the same published table and fingerprint as rows
gathered on the driver, whatever the sharding or the number of actors; an empty output; counts of error rows."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra import manifest as mf
from infra import shards
from infra.config_base import StageResources
from infra.raydata import flat_map_items

SCHEMA = pa.schema([("item", pa.int64()), ("k", pa.int64()), ("clip_uri", pa.string()), ("error", pa.string())])


class RowsWorker:
    """Item i -> i % 4 rows (0 rows for some items), one of them an error row when i % 5 == 0."""

    def __init__(self, root: str):
        self.root = root

    def __call__(self, item: int) -> list[dict]:
        return [{"item": item, "k": k, "clip_uri": f"{self.root}/clips/{item}-{k}.mp4",
                 "error": "unreadable" if item % 5 == 0 and k == 0 else None} for k in range(item % 4)]


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray

    from infra.config import load_config
    from infra.runtime import init_ray

    base = tmp_path_factory.mktemp("shards")
    init_ray(load_config("tiny", [f"storage.run_root={base / 'runs'}", f"state_dir={base / 'state'}",
                                  "ray.num_cpus=2"]))
    yield
    ray.shutdown()


def _rows(n: int, root: str) -> list[dict]:
    return [r for i in range(n) for r in RowsWorker(root)(i)]


@pytest.mark.parametrize("batch", [1, 3, 7, 100])
def test_fingerprint_does_not_depend_on_chunking(monkeypatch, batch):
    monkeypatch.setattr(shards, "FINGERPRINT_BATCH", batch)
    table = pa.Table.from_pylist(_rows(40, "/r"), schema=SCHEMA)
    whole = shards.fingerprint(table)
    hasher = shards.Fingerprinter(SCHEMA)
    for start in range(0, table.num_rows, 4):
        hasher.add(table.slice(start, 4))
    assert hasher.digest() == whole
    other = pa.Table.from_pylist(_rows(40, "/r")[::-1], schema=SCHEMA)
    assert shards.fingerprint(other) != whole  # order is content


def test_fingerprint_depends_on_values_not_buffers():
    """A table sliced out of a larger one (its arrays offsets into shared buffers) hashes as the same rows
    built afresh."""
    rows = _rows(40, "/r")
    whole = pa.Table.from_pylist(rows, schema=SCHEMA)
    assert mf.table_fingerprint(whole.slice(7, 20)) == mf.table_fingerprint(pa.Table.from_pylist(rows[7:27], schema=SCHEMA))
    changed = [dict(r) for r in rows[7:27]]
    changed[3]["k"] += 1
    assert mf.table_fingerprint(pa.Table.from_pylist(changed, schema=SCHEMA)) != mf.table_fingerprint(whole.slice(7, 20))


def _publish(result, tmp_path, name: str) -> tuple[mf.Manifest, pa.Table]:
    final = str(tmp_path / "run" / name)
    tmp = mf.tmp_dir_for(final)
    manifest = mf.publish(result, tmp, final, stage=name, config_hash="c", inputs=[], code_version="t",
                          started=0.0)
    return manifest, pq.read_table(manifest.data_uri)


def test_worker_shards_publish_the_same_table_as_driver_rows(ray_local, tmp_path):
    """Rows gathered by one actor on the driver vs shards written by two actors: the same published table."""
    root = str(tmp_path / "run")
    items = list(range(23))
    table = flat_map_items(items, RowsWorker, {"root": root}, SCHEMA, StageResources(actors=1), stage="t")
    name = "sharded"
    tmp = mf.tmp_dir_for(str(tmp_path / "run" / name))
    handle = flat_map_items(items, RowsWorker, {"root": root}, SCHEMA, StageResources(actors=2), stage="t",
                            shard_dir=os.path.join(tmp, shards.PARTS))
    assert isinstance(handle, shards.Shards) and handle.num_rows == table.num_rows
    assert handle.head(4).to_pylist() == table.slice(0, 4).to_pylist()
    gathered, gathered_table = _publish(table, tmp_path, "gathered")
    final = str(tmp_path / "run" / name)
    sharded = mf.publish(handle, tmp, final, stage=name, config_hash="c", inputs=[], code_version="t", started=0.0)
    assert sharded.fingerprint == gathered.fingerprint
    # error rows are counted once, from the data, while the shards are merged (items 5, 10, 15)
    assert (sharded.row_count, sharded.error_count) == (gathered.row_count, gathered.error_count)
    assert sharded.error_count == sum(r["error"] is not None for r in _rows(23, root)) == 3
    assert pq.read_table(sharded.data_uri).equals(gathered_table)
    assert sorted(os.listdir(final)) == sorted([mf.DATA_FILE, mf.SUCCESS])  # the shards are merged, not published
    assert mf.read_arrow(sharded).column("clip_uri")[0].as_py().startswith(root + "/clips/")


def test_an_output_without_rows_publishes_an_empty_table(ray_local, tmp_path):
    tmp = mf.tmp_dir_for(str(tmp_path / "run" / "empty"))
    handle = flat_map_items([0, 4, 8], RowsWorker, {"root": "/r"}, SCHEMA, StageResources(actors=1), stage="t",
                            shard_dir=os.path.join(tmp, shards.PARTS))
    assert handle.num_rows == 0 and handle.paths() == []
    manifest = mf.publish(handle, tmp, str(tmp_path / "run" / "empty"), stage="empty", config_hash="c", inputs=[],
                          code_version="t", started=0.0)
    assert manifest.row_count == 0 and pq.read_table(manifest.data_uri).schema.names == SCHEMA.names
    assert manifest.fingerprint == mf.table_fingerprint(SCHEMA.empty_table())


def test_merge_parts_keeps_item_order_and_rewrite_sees_offsets(tmp_path):
    """Parts written in any order (files or folders named part-<item>) merge in item order; ``rewrite`` hands each
    shard its offset in the whole output."""
    folder = str(tmp_path / "parts")
    for index in (3, 0, 11, 7):  # workers finish in any order
        shards.write_part(_rows(index + 1, "/r")[-2:] or [], SCHEMA, folder, index)
    nested = str(tmp_path / "nested")
    for index in (2, 1):
        os.makedirs(os.path.join(nested, f"part-{index:08d}"))
        pq.write_table(pa.Table.from_pylist(_rows(index + 2, "/r")[-1:], schema=SCHEMA),
                       os.path.join(nested, f"part-{index:08d}", "data.parquet"))
    out = str(tmp_path / "merged.parquet")
    assert shards.merge_parts(nested, SCHEMA, out) == 2 and not os.path.exists(nested)
    assert pq.read_table(out).column("item").to_pylist() == [2, 3]
    handle = shards.Shards(folder, SCHEMA, {i: len(_rows(i + 1, "/r")[-2:]) for i in (0, 3, 7, 11)})
    items = [r["item"] for t in handle.tables() for r in t.to_pylist()]
    assert items == sorted(items) and handle.num_rows == len(items)
    shards.rewrite(handle, lambda table, first: table.set_column(
        1, "k", pa.array(range(first, first + table.num_rows), pa.int64())))
    assert [r["k"] for r in handle.column_values(["k"])] == list(range(handle.num_rows))
