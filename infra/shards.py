"""Stage outputs written by the workers, not held by the driver.

A per-item stage (segment, clips, ingest) used to bring every row back to the driver, which then wrote the
table: driver memory grew with the pool. Here each worker writes its item's rows as one Parquet shard into
the stage's temporary folder (``<tmp>/_parts/part-<item>.parquet``) and returns only counts; the driver
keeps a :class:`Shards` handle (folder, schema, per-item counts). Publishing streams the shards, in item
order, into the stage's one ``data.parquet`` and hashes them on the way, one shard in memory at a time.

The fingerprint does not depend on how rows were chunked (one table, or shards of any size): the Arrow IPC
stream of the rows, copied into compact arrays, is hashed in fixed batches of :data:`FINGERPRINT_BATCH` rows.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from infra import storage

PARTS = "_parts"
FINGERPRINT_BATCH = 1 << 13  # rows; bounds what the hasher holds while streaming


class _HashSink:
    """A write-only file that feeds a SHA-256 (the IPC writer's sink; nothing is kept)."""

    def __init__(self):
        self.hash = hashlib.sha256()
        self.closed = False

    def write(self, data) -> int:
        self.hash.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Fingerprinter:
    """Content hash of a table fed in pieces: schema + rows in order, re-chunked to fixed batches."""

    def __init__(self, schema: pa.Schema):
        self._sink = _HashSink()
        self._writer = pa.ipc.new_stream(self._sink, schema)
        self._schema = schema
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= FINGERPRINT_BATCH:
            joined = pa.concat_tables(self._pending).combine_chunks()
            self._write(joined.slice(0, FINGERPRINT_BATCH))
            rest = joined.slice(FINGERPRINT_BATCH)
            self._pending, self._pending_rows = [rest], rest.num_rows

    def _write(self, table: pa.Table) -> None:
        # IPC writes a sliced array's buffers as they lie (offsets into a larger buffer): a copy into fresh,
        # compact arrays makes the bytes depend on the values only, not on where the rows came from.
        self._writer.write_table(table.take(pa.array(range(table.num_rows), pa.int64())))
        self.rows += table.num_rows

    def digest(self) -> str:
        if self._pending_rows or not self.rows:  # an empty table hashes as one empty batch, as it always did
            self._write(pa.concat_tables(self._pending) if self._pending else self._schema.empty_table())
        self._writer.close()
        return self._sink.hash.hexdigest()[:16]


def fingerprint(table: pa.Table) -> str:
    hasher = Fingerprinter(table.schema)
    hasher.add(table)
    return hasher.digest()


@dataclass
class Shards:
    """Handle of a stage output that the workers wrote: one shard per item, read back in item order."""

    folder: str
    schema: pa.Schema
    counts: dict[int, int] = field(default_factory=dict)  # item index -> rows (no file when 0)

    @property
    def num_rows(self) -> int:
        return sum(self.counts.values())

    def paths(self) -> list[str]:
        return [part_uri(self.folder, i) for i in sorted(self.counts) if self.counts[i]]

    def tables(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Each shard as a table (only ``columns`` if given), in item order."""
        for path in self.paths():
            with storage.open_uri(path, "rb") as fh:
                yield pq.read_table(fh, columns=columns, schema=self.schema)

    def head(self, rows: int) -> pa.Table:
        taken: list[pa.Table] = []
        for table in self.tables():
            taken.append(table.slice(0, rows - sum(t.num_rows for t in taken)))
            if sum(t.num_rows for t in taken) >= rows:
                break
        return pa.concat_tables(taken) if taken else self.schema.empty_table()

    def column_values(self, columns: list[str]) -> Iterator[dict]:
        """Rows as dicts of only ``columns``: for a stage's counts and metrics without the whole table."""
        for table in self.tables(columns):
            yield from table.to_pylist()


def part_uri(folder: str, index: int) -> str:
    return storage.join(folder, f"part-{index:08d}.parquet")


def write_part(rows: list[dict], schema: pa.Schema, folder: str, index: int) -> dict:
    """Worker side: item ``index``'s rows as one shard; returns the counts the driver keeps. A retried
    item overwrites its shard whole (written under a temporary name, then renamed: a killed worker leaves
    no partial shard under the final name)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    if table.num_rows:
        _write_whole(table, part_uri(folder, index))
    return {"index": index, "rows": table.num_rows}


def _write_whole(table: pa.Table, uri: str) -> None:
    """``table`` as the Parquet file ``uri``, never seen half-written under that name."""
    if storage.is_remote(uri):  # an object PUT is atomic
        with storage.open_uri(uri, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
        return
    os.makedirs(os.path.dirname(uri), exist_ok=True)
    tmp = f"{uri}.{uuid.uuid4().hex[:8]}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, uri)


def rewrite(shards: Shards, change) -> None:
    """Driver side, one shard in memory at a time: each shard replaced by ``change(table, first_row)``, where
    ``first_row`` is the shard's offset in the whole output (for columns computed across all rows)."""
    offset = 0
    for path, table in zip(shards.paths(), shards.tables(), strict=True):
        _write_whole(change(table, offset), path)
        offset += table.num_rows


def merge_parts(folder: str, schema: pa.Schema, out_uri: str, rows_per_group: int = 256) -> int:
    """Every Parquet file under ``folder`` whose path has a ``part-<item>`` component (a file or a folder of
    that name; path order = item order) streamed into one Parquet file with row groups of about
    ``rows_per_group`` rows; the parts are removed. Returns the row count."""
    paths = sorted(p for p in (storage.list_files(folder) if storage.exists(folder) else [])
                   if "/part-" in p and p.endswith(".parquet"))
    rows, pending = 0, []
    with storage.open_uri(out_uri, "wb") as fh, pq.ParquetWriter(fh, schema, compression="zstd") as writer:
        for path in paths:
            with storage.open_uri(path, "rb") as part:
                pending.append(pq.read_table(part, schema=schema))
            if sum(t.num_rows for t in pending) >= rows_per_group:
                writer.write_table(pa.concat_tables(pending))
                rows, pending = rows + sum(t.num_rows for t in pending), []
        if pending:
            writer.write_table(pa.concat_tables(pending))
            rows += sum(t.num_rows for t in pending)
    storage.remove(folder)
    return rows


def write_merged(shards: Shards, data_uri: str, relativize) -> tuple[str, int, int]:
    """Stream every shard, made relative by ``relativize(table)``, into one Parquet file at ``data_uri``;
    then remove the shards. Returns (fingerprint, rows, error rows)."""
    hasher: Fingerprinter | None = None
    errors = 0
    with storage.open_uri(data_uri, "wb") as fh:
        writer = None
        for table in shards.tables():
            table = relativize(table)
            if writer is None:
                writer = pq.ParquetWriter(fh, table.schema, compression="zstd")
                hasher = Fingerprinter(table.schema)
            writer.write_table(table)
            hasher.add(table)
            if "error" in table.column_names:
                errors += int(table.num_rows - table.column("error").null_count)
        if writer is None:  # no rows at all: an empty table with the stage's schema
            empty = relativize(shards.schema.empty_table())
            pq.write_table(empty, fh, compression="zstd")
            hasher = Fingerprinter(empty.schema)
        else:
            writer.close()
    storage.remove(shards.folder)
    return hasher.digest(), hasher.rows, errors
