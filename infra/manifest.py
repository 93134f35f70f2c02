"""Manifests: one Parquet table per stage output plus a ``_SUCCESS.json`` commit record.

DESIGN.md section 3: a stage writes into a temporary sibling and publishes with one rename;
``_SUCCESS.json`` (row count, fingerprint, config hash, code version, stats) is written last,
so a folder without it is never trusted. Its ``resume_key`` (config hash + input fingerprints)
lets a rerun skip a finished stage.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from infra import storage

SUCCESS = "_SUCCESS.json"
DATA_FILE = "data.parquet"


class Manifest(BaseModel):
    """The published record of one stage output; passed between stages by value."""

    stage: str
    uri: str  # the stage's output folder
    fingerprint: str
    row_count: int
    error_count: int = 0
    config_hash: str
    resume_key: str
    inputs: list[str] = Field(default_factory=list)  # fingerprints of input manifests
    code_version: str = "unknown"
    created_at: float = 0.0
    seconds: float = 0.0
    stats: dict = Field(default_factory=dict)

    @property
    def data_uri(self) -> str:
        return storage.join(self.uri, DATA_FILE)


def resume_key(config_hash: str, inputs: Iterable[Manifest]) -> str:
    parts = [config_hash, *sorted(m.fingerprint for m in inputs)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def table_fingerprint(table: pa.Table) -> str:
    """Content hash of a table (schema + rows in their stored order), independent of the
    Parquet writer, so identical stage results give identical fingerprints."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue()).hexdigest()[:16]


def load_success(stage_uri: str) -> Manifest | None:
    """The published manifest at ``stage_uri``, or None when absent/unreadable (not published)."""
    marker = storage.join(stage_uri, SUCCESS)
    try:
        if not storage.exists(marker):
            return None
        return Manifest.model_validate_json(storage.read_text(marker))
    except (OSError, ValueError):
        return None


def read_table(manifest_or_uri: Manifest | str, columns: list[str] | None = None) -> pd.DataFrame:
    uri = manifest_or_uri.data_uri if isinstance(manifest_or_uri, Manifest) else manifest_or_uri
    with storage.open_uri(uri, "rb") as fh:
        return to_pandas(pq.read_table(fh, columns=columns))


def read_head(manifest: Manifest, rows: int) -> pd.DataFrame:
    """The first ``rows`` rows, reading only the first batch (samples for MLflow, not the table)."""
    with storage.open_uri(manifest.data_uri, "rb") as fh:
        parquet = pq.ParquetFile(fh)
        first = next(parquet.iter_batches(batch_size=rows), None)
        head = parquet.schema_arrow.empty_table() if first is None else pa.Table.from_batches([first])
    return to_pandas(head)


def read_rows(manifest: Manifest) -> list[dict]:
    """The table as Python rows, nulls as ``None``: what stages hand to their workers one by one."""
    with storage.open_uri(manifest.data_uri, "rb") as fh:
        return pq.read_table(fh).to_pylist()


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas with missing strings as ``None`` (pandas 3 would make them NaN, and
    ``row["error"] is None`` is how every stage tells a usable row from a carried error row)."""
    df = table.to_pandas()
    for name in table.column_names:
        if pa.types.is_string(table.schema.field(name).type) or pa.types.is_large_string(
            table.schema.field(name).type
        ):
            df[name] = df[name].astype(object).where(df[name].notna(), None)
    return df


def tmp_dir_for(final_uri: str) -> str:
    parent, name = final_uri.rsplit("/", 1)
    return storage.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")


def clean_stale_tmp(run_uri: str) -> list[str]:
    """Remove temporary stage folders left by a crash (never published, never trusted)."""
    removed = []
    fs = storage.filesystem(run_uri)
    if not storage.exists(run_uri):
        return removed
    for path in fs.ls(storage._path(run_uri), detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(".") and ".tmp-" in name:
            uri = f"s3://{path}" if run_uri.startswith("s3://") else path
            storage.remove(uri)
            removed.append(uri)
    return removed


def publish(
    table: pa.Table,
    tmp_uri: str,
    final_uri: str,
    *,
    stage: str,
    config_hash: str,
    inputs: list[Manifest],
    code_version: str,
    started: float,
    stats: dict | None = None,
) -> Manifest:
    """Write ``table`` and ``_SUCCESS.json`` into ``tmp_uri`` and rename it to ``final_uri``."""
    storage.makedirs(tmp_uri)
    with storage.open_uri(storage.join(tmp_uri, DATA_FILE), "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
    errors = 0
    if "error" in table.column_names:
        errors = int(table.num_rows - table.column("error").null_count)
    manifest = Manifest(
        stage=stage,
        uri=final_uri,
        fingerprint=table_fingerprint(table),
        row_count=table.num_rows,
        error_count=errors,
        config_hash=config_hash,
        resume_key=resume_key(config_hash, inputs),
        inputs=[m.fingerprint for m in inputs],
        code_version=code_version,
        created_at=time.time(),
        seconds=round(time.time() - started, 3),
        stats=stats or {},
    )
    record = manifest.model_dump_json(indent=2)
    if storage.exists(final_uri):  # an unpublished or outdated previous attempt
        storage.remove(final_uri)
    if storage.is_remote(final_uri):
        # Object stores have no atomic folder rename: copy, then commit with the marker last.
        storage.rename(tmp_uri, final_uri)
        storage.write_text(storage.join(final_uri, SUCCESS), record)
    else:
        storage.write_text(storage.join(tmp_uri, SUCCESS), record)
        storage.rename(tmp_uri, final_uri)
    return manifest


def success_summary(manifest: Manifest) -> str:
    return json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
