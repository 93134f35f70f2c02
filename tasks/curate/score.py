"""Score: every filter of report section 3.1 ADDS columns to the clip table; no row is deleted.

Per clip, ONE decode (:func:`tasks.curate.filters.frames.decode_clip`) feeds every frame filter; models
(OCR, CLIP + aesthetic head) load once per Ray actor (:class:`ScoreWorker`). Rows with ``error`` are
carried with null scores. Cross-clip work (near-duplicate groups) runs in the stage body once all
embeddings are back; VTSS runs last in the worker, over the row's other scores.
"""

from __future__ import annotations

import json
import os
import time

import pyarrow as pa

from infra import manifest as mf
from infra import storage
from infra.config_filters import ScoreConfig
from infra.errors import retry_input, surface_transient
from infra.manifest import Manifest
from infra.raydata import flat_map_items
from infra.shards import PARTS, Shards, merge_parts, rewrite
from infra.stage import StageContext, StageWork, run_stage
from infra.tables import CLIPS_SCHEMA
from models.aesthetic import build_tiny
from tasks.curate.filters import BasicFilter, build_filters, score_columns
from tasks.curate.filters.dedup import (
    SIDE_SCHEMA,
    SIDE_STORE,
    WIDE_COLUMNS,
    group_from_side_store,
    write_side_store,
)
from tasks.curate.filters.frames import decode_clip
from tasks.curate.filters.quality import VTSSFilter

# The clip table without the wide per-clip arrays (WIDE_COLUMNS): those go to the stage's side store.
SCORED_SCHEMA = pa.schema(list(CLIPS_SCHEMA) + [pa.field(k, t) for k, t in score_columns().items()
                                                if k not in WIDE_COLUMNS]
                          + [pa.field("score_timing", pa.string())])
DECODE = "decode"


def score_clip(row: dict, filters: dict, cfg: ScoreConfig, basic: BasicFilter, vtss: VTSSFilter | None) -> dict:
    """``row`` plus every score column (null where a filter is off or the row has an error) and
    ``score_timing`` (JSON: seconds per filter and for the decode). Raises only
    :class:`TransientError`, for a fault of the machine that outlived its retries."""
    out = {**{k: row.get(k) for k in CLIPS_SCHEMA.names}, **dict.fromkeys(score_columns())}
    timing: dict[str, float] = {}
    def scores() -> None:
        out.update(basic(row))
        started = time.perf_counter()
        with storage.local_copy(row["clip_uri"]) as path:
            clip = decode_clip(path, int(row["num_frames"]), float(row["fps"]), cfg.decode)
        timing[DECODE] = time.perf_counter() - started
        for name, flt in filters.items():
            started = time.perf_counter()
            out.update(flt(clip))
            timing[name] = time.perf_counter() - started
        if vtss is not None:
            out.update(vtss(out))

    if out["error"] is None:
        # A machine fault (full disk, S3 5xx) is retried, then fails the stage; an unreadable clip is a row.
        _, exc = retry_input(scores, f"score: reading {row['clip_uri']}")
        if exc is not None:
            out.update(dict.fromkeys(score_columns()))
            out["error"] = f"{row['clip_uri']}: scoring failed ({type(exc).__name__}: {exc})"
    out["score_timing"] = json.dumps({k: round(v, 5) for k, v in timing.items()})
    return out


class ScoreWorker:
    """Ray actor body: filters (and their models) built once, one clip per call."""

    def __init__(self, cfg: dict):
        import cv2

        cv2.setNumThreads(1)  # actors are the parallelism; the machine is shared
        self.cfg = ScoreConfig.model_validate(cfg)
        self.filters = build_filters(self.cfg)
        self.basic = BasicFilter()
        self.vtss = VTSSFilter(self.cfg.quality) if self.cfg.quality.enabled else None

    def __call__(self, row: dict) -> list[dict]:
        return [score_clip(row, self.filters, self.cfg, self.basic, self.vtss)]


class ScoreBatchWorker(ScoreWorker):
    """Ray actor body over a batch of clips for the sharded stage: the wide per-clip arrays go from the worker
    straight to its part of the side store, the clip rows without them to the stage's shard (``infra.shards``);
    the driver holds neither."""

    def __init__(self, cfg: dict, side_folder: str):
        super().__init__(cfg)
        self.side_folder = side_folder

    def __call__(self, batch: dict) -> list[dict]:
        rows = [score_clip(r, self.filters, self.cfg, self.basic, self.vtss) for r in batch["clips"]]
        part = storage.join(self.side_folder, f"part-{batch['index']:08d}")
        storage.makedirs(part)
        write_side_store(rows, part, self.cfg.dedup)
        for row in rows:
            for name in WIDE_COLUMNS:
                row.pop(name, None)
        return rows


# The progress bar's label (tests watch it to act while the stage is under way).
PROGRESS = "score (clip batches)"


def clip_batches(clips: list[dict], actors: int) -> list[dict]:
    """Clips in batches (one shard each): about eight per actor so the pool stays balanced, at most 32
    clips so a lost worker costs little and shards stay small."""
    size = max(1, min(32, len(clips) // max(8 * actors, 1)))
    return [{"index": i, "clips": clips[start:start + size]} for i, start in enumerate(range(0, len(clips), size))]


def _with_groups(table: pa.Table, first: int, groups: list[dict]) -> pa.Table:
    part = groups[first:first + table.num_rows]
    for name in ("score_dup", "dup_group", "dup_keep"):
        column = pa.array([g[name] for g in part], type=table.schema.field(name).type)
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def add_duplicate_groups(rows: list[dict], cfg: ScoreConfig, side_uri: str) -> None:
    """Fill ``score_dup`` / ``dup_group`` / ``dup_keep`` across all clips (in place), from the side store
    written in ``side_uri`` (mean signatures for all, full embeddings only for screened pairs)."""
    if not cfg.dedup.enabled:
        return
    groups = group_from_side_store(side_uri, [r["clip_id"] for r in rows], [r["num_frames"] or 0 for r in rows],
                                   cfg.dedup)
    for row, group in zip(rows, groups, strict=True):
        row.update(group)


def timing_summary(rows: list[dict]) -> dict[str, float]:
    """Seconds per filter summed over clips (from ``score_timing``)."""
    total: dict[str, float] = {}
    for row in rows:
        for name, seconds in json.loads(row["score_timing"] or "{}").items():
            total[name] = total.get(name, 0.0) + seconds
    return total


def run(ctx: StageContext, cfg: ScoreConfig, clips: Manifest) -> Manifest:
    """Stage ``score``: the clip table plus every ``score_*`` column."""

    def body(work: StageWork) -> Shards:
        if cfg.aesthetic.enabled and (cfg.aesthetic.backbone_path is None or cfg.aesthetic.head_path is None):
            # Build the tiny random pair once here, not racing in every actor; actors on other nodes (or in
            # another working directory) read it from the run root, never from a path only this node has.
            built = os.path.join(cfg.aesthetic.cache_dir, "aesthetic-tiny")
            build_tiny(built)
            shared = storage.share_folder(built, ctx.cfg.storage.run_root, "aesthetic-tiny")
            backbone, head = storage.join(shared, "backbone"), storage.join(shared, "head.pt")
            run_cfg = cfg.model_copy(update={"aesthetic": cfg.aesthetic.model_copy(
                update={"backbone_path": backbone, "head_path": head})})
        else:
            run_cfg = cfg
        started = time.time()
        side_parts = storage.join(work.tmp_uri, "_side_parts")
        batches = clip_batches(mf.read_rows(clips), cfg.resources.actors or 2)
        with surface_transient():  # a persistent fault fails the stage: nothing is published
            scored = flat_map_items(batches, ScoreBatchWorker, {"cfg": run_cfg.model_dump(), "side_folder": side_parts},
                                    SCORED_SCHEMA, cfg.resources, stage="score", shard_dir=storage.join(work.tmp_uri, PARTS),
                                    progress=PROGRESS)
        seconds = max(time.time() - started, 1e-9)
        work.stats.update(side_store_rows=merge_parts(side_parts, SIDE_SCHEMA, storage.join(work.tmp_uri, SIDE_STORE)))
        if cfg.dedup.enabled:  # across all clips: the driver reads two narrow columns, not the rows
            ids, lengths = [], []
            for table in scored.tables(["clip_id", "num_frames"]):
                ids += table.column("clip_id").to_pylist()
                lengths += [n or 0 for n in table.column("num_frames").to_pylist()]
            groups = group_from_side_store(work.tmp_uri, ids, lengths, cfg.dedup)
            rewrite(scored, lambda table, first: _with_groups(table, first, groups))
        ok, timings, dropped = 0, [], 0
        for row in scored.column_values(["error", "score_timing", "dup_keep"]):
            if row["error"] is None:
                ok, dropped = ok + 1, dropped + (row["dup_keep"] is False)
                timings.append(row)
        per_filter = timing_summary(timings)
        work.metrics.update(scored=ok, clips_per_s=ok / seconds,
                            **{f"filter_seconds_{k}": v for k, v in per_filter.items()}, duplicates_dropped=dropped)
        work.stats.update(scored=ok, clips_per_s=round(ok / seconds, 3))
        summary = os.path.join(work.scratch_dir, "filter_seconds.json")
        with open(summary, "w", encoding="utf-8") as fh:
            json.dump(per_filter, fh, indent=1)
        work.artifacts.append(summary)
        return scored

    return run_stage(ctx, "score", cfg, [clips], body)

