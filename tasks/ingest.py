"""Ingest: one row per raw video in the sources table (DESIGN.md section 4).

``source_id`` comes from the file's bytes, so renaming or moving a video keeps its id and two
copies of one film share it. Unusable files get a row with ``error`` set; later stages skip them.
"""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa

from infra import storage
from infra.config import IngestConfig
from infra.contact_sheet import contact_sheet
from infra.manifest import Manifest
from infra.raydata import flat_map_items
from infra.stage import StageContext, StageWork, run_stage
from infra.video import VideoError, probe_video

SOURCES_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("source_uri", pa.string()),
        ("size_bytes", pa.int64()),
        ("container", pa.string()),
        ("codec", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("num_frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("error", pa.string()),
    ]
)

_CHUNK = 1 << 20


def list_sources(input_uri: str, cfg: IngestConfig) -> list[str]:
    """Video files under a folder or ``s3://`` prefix (or the one file named), sorted.

    Hidden files are skipped: they are partial writes (``VideoWriter`` temp files, rsync, ...).
    """
    root = storage.normalize(input_uri)
    if not storage.exists(root):
        raise FileNotFoundError(
            f"input {input_uri!r} does not exist; pass a folder or s3:// prefix of videos"
        )
    extensions = tuple(e.lower() for e in cfg.extensions)
    return sorted(
        uri
        for uri in storage.list_files(root)
        if uri.lower().endswith(extensions) and not os.path.basename(uri).startswith(".")
    )


def content_id(path: str, hash_bytes: int = 0) -> str:
    """First 16 hex of sha256 over the whole file, or over its first ``hash_bytes`` bytes plus its
    size (a cheap id for huge files that still changes when the file is re-encoded or cut)."""
    digest = hashlib.sha256()
    remaining = hash_bytes or None
    with open(path, "rb") as fh:
        while remaining is None or remaining > 0:
            chunk = fh.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
            if not chunk:
                break
            digest.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    if hash_bytes:
        digest.update(f":{os.path.getsize(path)}".encode())
    return digest.hexdigest()[:16]


def probe_source(uri: str, cfg: IngestConfig) -> dict:
    """One sources-table row for ``uri``; never raises (problems go to ``error``)."""
    row = {
        "source_id": None,
        "source_uri": uri,
        "size_bytes": -1,
        "container": None,
        "codec": None,
        "width": -1,
        "height": -1,
        "fps": -1.0,
        "num_frames": -1,
        "duration_s": -1.0,
        "error": None,
    }
    try:
        with storage.local_copy(uri) as path:  # one download serves both the hash and the probe
            row["size_bytes"] = os.path.getsize(path)
            row["source_id"] = content_id(path, cfg.hash_bytes)
            probe = probe_video(path, max_size=(cfg.max_width, cfg.max_height))
    except VideoError as exc:
        row["error"] = f"{uri}: {exc.reason}"  # name the source, not a temp download
    except Exception as exc:  # unreadable file, lost connection: a row, not a dead stage
        row["error"] = f"{uri}: cannot read ({type(exc).__name__}: {exc})"
    else:
        row.update(
            container=probe.container,
            codec=probe.codec,
            width=probe.width,
            height=probe.height,
            fps=probe.fps,
            num_frames=probe.num_frames,
            duration_s=probe.duration_s,
        )
    if row["source_id"] is None:  # bytes unreadable: still a stable id so the row can be joined
        row["source_id"] = "uri-" + hashlib.sha256(uri.encode()).hexdigest()[:12]
    return row


# --- stage -----------------------------------------------------------------------------------


class IngestWorker:
    """Ray actor body: probe one file per call."""

    def __init__(self, cfg: dict):
        self.cfg = IngestConfig.model_validate(cfg)

    def __call__(self, item: dict) -> list[dict]:
        return [probe_source(item["uri"], self.cfg)]


def mark_duplicates(table: pa.Table) -> pa.Table:
    """Identical bytes at two paths share a source_id; keep the first, flag the rest, so clip ids
    (hashes of source_id + frame range) stay unique."""
    rows = table.to_pylist()
    first: dict[str, str] = {}
    for row in rows:
        sid = row["source_id"]
        if row["error"] is None and sid in first:
            row["error"] = f"duplicate content of {first[sid]} (same source_id); skipped"
        elif row["error"] is None:
            first[sid] = row["source_uri"]
    return pa.Table.from_pylist(rows, schema=table.schema)


def run(ctx: StageContext, cfg: IngestConfig, input_uri: str) -> Manifest:
    """Stage ``ingest``: list a folder / s3 prefix and probe every video (one file per Ray task)."""
    uris = list_sources(input_uri, cfg)
    listing = "\n".join(f"{u}\t{storage.size(u)}" for u in uris)
    key = hashlib.sha256(f"{input_uri}\n{listing}".encode()).hexdigest()[:16]

    def body(work: StageWork) -> pa.Table:
        table = flat_map_items([{"uri": u} for u in uris], IngestWorker, {"cfg": cfg.model_dump()}, SOURCES_SCHEMA)
        table = mark_duplicates(table)
        ok = [r for r in table.to_pylist() if r["error"] is None]
        frames = sum(r["num_frames"] for r in ok)
        hours = sum(r["duration_s"] for r in ok) / 3600
        work.metrics.update(sources=table.num_rows, readable=len(ok), frames=frames, hours=hours)
        work.stats.update(input_uri=input_uri, sources=table.num_rows, readable=len(ok), frames=frames)
        sheet = os.path.join(work.scratch_dir, "contact_sheet.png")
        contact_sheet([(r["source_uri"], None, os.path.basename(r["source_uri"])) for r in ok[:12]], sheet)
        work.artifacts.append(sheet)
        return table

    return run_stage(ctx, "ingest", cfg, [], body, key_extra=key)
