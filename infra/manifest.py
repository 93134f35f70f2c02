"""Manifests: one Parquet table per stage output plus a ``_SUCCESS.json`` commit record.

docs/architecture.md, "The stage contract": a stage writes into a temporary sibling and publishes with one rename;
``_SUCCESS.json`` (row count, fingerprint, config hash, code version, stats) is written last,
so a folder without it is never trusted. Its ``resume_key`` (config hash + input fingerprints)
lets a rerun skip a finished stage.

A run's store can move (copied, renamed, mounted elsewhere): nothing published names where it was.
Paths inside the run are stored relative to the run root (the stage folder's parent): the ``uri`` and
``*_uri`` columns of a table as ``stage/file``, path values in ``stats`` as ``./stage/file``, and the record's
``uri`` as the stage's folder name. Readers resolve them against where the store is now; paths outside
the run (an ``--input`` folder) stay as given.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from infra import runlock, shards, storage

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


def run_root_of(stage_uri: str) -> str:
    """The run root holding a stage folder (stage names are flat: ``{run_uri}/{stage}``)."""
    return stage_uri.rstrip("/").rsplit("/", 1)[0]


def _inside_prefix(root: str) -> str:
    root = root.rstrip("/")
    return root + "/" if storage.is_remote(root) else os.path.normpath(storage._strip_file(root)) + os.sep


def relative_to(uri, root: str):
    """``uri`` relative to ``root`` when it lies inside it, else unchanged (non-strings too)."""
    if not isinstance(uri, str) or not uri:
        return uri
    path = uri if storage.is_remote(uri) else os.path.normpath(storage._strip_file(uri))
    prefix = _inside_prefix(root)
    return path[len(prefix):] if path.startswith(prefix) and len(path) > len(prefix) else uri


def is_relative(value) -> bool:
    return isinstance(value, str) and bool(value) and not storage.is_remote(value) \
        and not os.path.isabs(storage._strip_file(value))


def resolve(value, root: str):
    """A stored path made usable: relative ones (``a/b`` or ``./a/b``) joined to ``root``; others unchanged."""
    if not is_relative(value):
        return value
    return storage.join(root, value[2:] if value.startswith("./") else value)


def _uri_columns(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if (f.name == "uri" or f.name.endswith("_uri"))
            and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]


def relativize_table(table: pa.Table, root: str) -> pa.Table:
    """Every ``*_uri`` value inside ``root`` made relative to it (vectorised: tables can be large)."""
    prefix = _inside_prefix(root)
    for name in _uri_columns(table):
        column = table.column(name)
        inside = pc.fill_null(pc.starts_with(column, prefix), False)
        column = pc.if_else(inside, pc.utf8_slice_codeunits(column, len(prefix)), column)
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def resolve_table(table: pa.Table, root: str) -> pa.Table:
    """The inverse of :func:`relativize_table` against where the run is now."""
    base = root.rstrip("/") + "/"
    for name in _uri_columns(table):
        column = table.column(name)
        relative = pc.invert(pc.or_(pc.starts_with(column, "/"), pc.match_substring(column, "://")))
        joined = pc.binary_join_element_wise(pa.scalar(base, column.type), pc.replace_substring_regex(column, "^\\./", ""),
                                             pa.scalar("", column.type))
        column = pc.if_else(pc.fill_null(relative, False), joined, column)
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def _map_paths(value, fn):
    if isinstance(value, dict):
        return {k: _map_paths(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_paths(v, fn) for v in value]
    return fn(value)


def success_record(manifest: Manifest) -> str:
    """``_SUCCESS.json`` text: no absolute path of the run in it (``uri`` = the stage folder's name)."""
    root = run_root_of(manifest.uri)

    def rel(v):
        r = relative_to(v, root)
        return f"./{r}" if r is not v and r != v else v

    record = manifest.model_dump(mode="json")
    record.update(uri=manifest.uri.rstrip("/").rsplit("/", 1)[-1], stats=_map_paths(manifest.stats, rel))
    return json.dumps(record, indent=2)


def resume_key(config_hash: str, inputs: Iterable[Manifest]) -> str:
    parts = [config_hash, *sorted(m.fingerprint for m in inputs)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def table_fingerprint(table: pa.Table) -> str:
    """Content hash of a table (schema + rows in their stored order), independent of the
    Parquet writer, so identical stage results give identical fingerprints."""
    return shards.fingerprint(table)


def load_success(stage_uri: str) -> Manifest | None:
    """The published manifest at ``stage_uri``, or None when absent/unreadable (not published)."""
    marker = storage.join(stage_uri, SUCCESS)
    try:
        if not storage.exists(marker):
            return None
        manifest = Manifest.model_validate_json(storage.read_text(marker))
    except (OSError, ValueError):
        return None
    # Where the stage is now, not where it was written (older records hold an absolute uri).
    root = run_root_of(storage.normalize(stage_uri))
    return manifest.model_copy(update={"uri": storage.normalize(stage_uri),
                                       "stats": _map_paths(manifest.stats, lambda v: resolve(v, root)
                                                           if isinstance(v, str) and v.startswith("./") else v)})


def read_arrow(manifest_or_uri: Manifest | str, columns: list[str] | None = None) -> pa.Table:
    """The published table, its ``*_uri`` paths resolved against where the run is now."""
    uri = manifest_or_uri.data_uri if isinstance(manifest_or_uri, Manifest) else manifest_or_uri
    with storage.open_uri(uri, "rb") as fh:
        table = pq.read_table(fh, columns=columns)
    return resolve_table(table, run_root_of(run_root_of(uri)))


def read_table(manifest_or_uri: Manifest | str, columns: list[str] | None = None) -> pd.DataFrame:
    return to_pandas(read_arrow(manifest_or_uri, columns))


def read_head(manifest: Manifest, rows: int) -> pd.DataFrame:
    """The first ``rows`` rows, reading only the first batch (samples for MLflow, not the table)."""
    with storage.open_uri(manifest.data_uri, "rb") as fh:
        parquet = pq.ParquetFile(fh)
        first = next(parquet.iter_batches(batch_size=rows), None)
        head = parquet.schema_arrow.empty_table() if first is None else pa.Table.from_batches([first])
    return to_pandas(resolve_table(head, run_root_of(manifest.uri)))


def read_rows(manifest: Manifest) -> list[dict]:
    """The table as Python rows, nulls as ``None``: what stages hand to their workers one by one."""
    return read_arrow(manifest).to_pylist()


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
    table: pa.Table | shards.Shards,
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
    """Write ``table`` and ``_SUCCESS.json`` into ``tmp_uri`` and rename it to ``final_uri``. A
    :class:`~infra.shards.Shards` handle (rows the workers wrote) is streamed into the one data file."""
    storage.makedirs(tmp_uri)
    root = run_root_of(final_uri)
    if isinstance(table, shards.Shards):
        fingerprint, rows, errors = shards.write_merged(table, storage.join(tmp_uri, DATA_FILE),
                                                        lambda t: relativize_table(t, root))
    else:
        table = relativize_table(table, root)
        with storage.open_uri(storage.join(tmp_uri, DATA_FILE), "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
        fingerprint, rows, errors = table_fingerprint(table), table.num_rows, 0
        if "error" in table.column_names:
            errors = int(table.num_rows - table.column("error").null_count)
    manifest = Manifest(
        stage=stage,
        uri=final_uri,
        fingerprint=fingerprint,
        row_count=rows,
        error_count=errors,
        config_hash=config_hash,
        resume_key=resume_key(config_hash, inputs),
        inputs=[m.fingerprint for m in inputs],
        code_version=code_version,
        created_at=time.time(),
        seconds=round(time.time() - started, 3),
        stats=stats or {},
    )
    record = success_record(manifest)
    if not storage.is_remote(tmp_uri):
        readable(tmp_uri)
    lock = runlock.held(run_root_of(final_uri))
    if lock is not None:  # a writer that lost the run to another machine publishes nothing
        lock.check()
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


def readable(folder: str) -> None:
    """Published files 0644, folders 0755: temporary files are created 0600, and a published stage is
    read by other users (reviewers, a serving process under another account)."""
    for parent, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(parent, name), 0o755)
        for name in files:
            os.chmod(os.path.join(parent, name), 0o644)
    os.chmod(folder, 0o755)


def success_summary(manifest: Manifest) -> str:
    return json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
