"""Ingest: one row per raw video in the sources table (docs/architecture.md, "The data model").

``source_id`` comes from the file's bytes, so renaming or moving a video keeps its id and two
copies of one film share it. Unusable files get a row with ``error`` set; later stages skip them.
Images are sources too (``media = "image"``): the report pretrains 256p/360p on images and videos
jointly. Every other entry of the input is a counted, logged skip (``infra/inputs.py``). Faults of
the machine (full disk, network, S3 5xx) are retried and then fail the stage: they are not rows.
"""

from __future__ import annotations

import hashlib
import json
import os

import pyarrow as pa

from infra import storage
from infra.config import IngestConfig
from infra.contact_sheet import contact_sheet
from infra.errors import TransientError, is_transient, retry, surface_transient
from infra.image import probe_image
from infra.inputs import Listing, list_inputs, log_skips
from infra.manifest import Manifest, relative_to
from infra.raydata import flat_map_items
from infra.stage import StageContext, StageWork, run_stage
from infra.tables import SOURCES_SCHEMA
from infra.video import VideoError, probe_video

_CHUNK = 1 << 20


def list_sources(input_uri: str, cfg: IngestConfig) -> list[str]:
    """Video and image files under a folder or ``s3://`` prefix (or the one file named), sorted;
    :func:`infra.inputs.list_inputs` has the skipped entries too."""
    listing = list_inputs(input_uri, cfg.extensions, cfg.image_extensions)
    return sorted(listing.videos + listing.images)


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


def _media(uri: str, cfg: IngestConfig) -> str:
    return "image" if uri.lower().endswith(tuple(e.lower() for e in cfg.image_extensions)) else "video"


def _probe_once(uri: str, cfg: IngestConfig, row: dict) -> None:
    with storage.local_copy(uri) as path:  # one download serves both the hash and the probe
        row["size_bytes"] = os.path.getsize(path)
        row["source_id"] = content_id(path, cfg.hash_bytes)
        limit = (cfg.max_width, cfg.max_height)
        if row["media"] == "image":
            probe = probe_image(uri, path, max_size=limit)
            row.update(fps=0.0, num_frames=1, duration_s=0.0)
        else:
            probe = probe_video(path, max_size=limit)
            row.update(fps=probe.fps, num_frames=probe.num_frames, duration_s=probe.duration_s)
    row.update(container=probe.container, codec=probe.codec, width=probe.width, height=probe.height,
               rotation=probe.rotation)


def probe_source(uri: str, cfg: IngestConfig) -> dict:
    """One sources-table row for ``uri``. Problems of the file go to ``error``; faults of the
    machine (disk, network, object store) are retried and then raise :class:`TransientError`."""
    row = {
        "source_id": None,
        "source_uri": uri,
        "media": _media(uri, cfg),
        "size_bytes": -1,
        "container": None,
        "codec": None,
        "width": -1,
        "height": -1,
        "fps": -1.0,
        "num_frames": -1,
        "duration_s": -1.0,
        "rotation": 0,
        "error": None,
    }
    blank = dict(row)

    def attempt() -> None:
        row.update(blank)
        try:
            _probe_once(uri, cfg, row)
        except VideoError as exc:
            if exc.__cause__ is not None and is_transient(exc.__cause__):
                raise exc.__cause__ from exc  # an I/O fault surfaced by the codec: retried, never a row
            row["error"] = f"{uri}: {exc.reason}"  # name the source, not a temp download
        except TransientError:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            row["error"] = f"{uri}: cannot read ({type(exc).__name__}: {exc})"

    retry(attempt, f"ingest: reading {uri}")
    if row["error"]:  # keep what the size told; the probe facts stay unknown
        row.update({k: blank[k] for k in ("container", "codec", "width", "height", "fps", "num_frames",
                                          "duration_s", "rotation")})
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


def _listing_key(input_uri: str, listing: Listing, run_uri: str) -> str:
    """What the stage read: every ingested file with its size, and every skip with its reason. Paths inside
    the run (the synthetic corpus) count relative to it, so a moved run store resumes instead of re-ingesting."""
    def size(uri: str) -> int:
        return retry(lambda: storage.size(uri), f"ingest: listing {uri}")

    def rel(uri: str) -> str:
        return relative_to(uri, run_uri)

    lines = [f"{rel(u)}\t{size(u)}" for u in sorted(listing.videos + listing.images)]
    lines += [f"{rel(s['uri'])}\tskip:{s['reason']}" for s in listing.skipped]
    return hashlib.sha256("\n".join([rel(input_uri), *lines]).encode()).hexdigest()[:16]


def run(ctx: StageContext, cfg: IngestConfig, input_uri: str) -> Manifest:
    """Stage ``ingest``: list a folder / s3 prefix and probe every video and image (one file per
    Ray task); every other entry is a counted skip with its reason."""
    listing = retry(lambda: list_inputs(input_uri, cfg.extensions, cfg.image_extensions), f"ingest: listing {input_uri}")
    log_skips(listing)
    uris = sorted(listing.videos + listing.images)
    key = _listing_key(input_uri, listing, ctx.run_uri)

    def body(work: StageWork) -> pa.Table:
        with surface_transient():
            table = flat_map_items([{"uri": u} for u in uris], IngestWorker, {"cfg": cfg.model_dump()}, SOURCES_SCHEMA,
                                   cfg.resources, stage="ingest")
        table = mark_duplicates(table)
        ok = [r for r in table.to_pylist() if r["error"] is None]
        frames = sum(r["num_frames"] for r in ok)
        hours = sum(r["duration_s"] for r in ok) / 3600
        images = sum(r["media"] == "image" for r in ok)
        reasons = listing.reasons()
        skipped = [dict(s, uri=relative_to(s["uri"], ctx.run_uri)) for s in listing.skipped]
        storage.write_text(storage.join(work.tmp_uri, "skipped.json"), json.dumps(skipped, indent=1))
        work.metrics.update(sources=table.num_rows, readable=len(ok), frames=frames, hours=hours, images=images,
                            entries=listing.entries, skipped=len(listing.skipped))
        work.stats.update(input_uri=relative_to(input_uri, ctx.run_uri), entries=listing.entries,
                          sources=table.num_rows, readable=len(ok), images=images, frames=frames, skipped=len(listing.skipped), skipped_by_reason=reasons)
        sheet = os.path.join(work.scratch_dir, "contact_sheet.png")
        contact_sheet([(r["source_uri"], None, os.path.basename(r["source_uri"]))
                       for r in ok if r["media"] == "video"][:12], sheet)
        work.artifacts.append(sheet)
        return table

    return run_stage(ctx, "ingest", cfg, [], body, key_extra=key)
