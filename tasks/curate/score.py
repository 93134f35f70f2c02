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
from infra.raydata import flat_map_rows
from infra.stage import StageContext, StageWork, run_stage
from infra.tables import CLIPS_SCHEMA
from models.aesthetic import build_tiny
from tasks.curate.filters import BasicFilter, build_filters, score_columns
from tasks.curate.filters.dedup import WIDE_COLUMNS, group_from_side_store, write_side_store
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

    def body(work: StageWork) -> pa.Table:
        if cfg.aesthetic.enabled and (cfg.aesthetic.backbone_path is None or cfg.aesthetic.head_path is None):
            # Build the tiny random pair once here, not racing in every actor.
            backbone, head = build_tiny(os.path.join(cfg.aesthetic.cache_dir, "aesthetic-tiny"))
            run_cfg = cfg.model_copy(update={"aesthetic": cfg.aesthetic.model_copy(
                update={"backbone_path": backbone, "head_path": head})})
        else:
            run_cfg = cfg
        started = time.time()
        with surface_transient():  # a persistent fault fails the stage: nothing is published
            scored = flat_map_rows(mf.read_rows(clips), ScoreWorker, {"cfg": run_cfg.model_dump()},
                                   cfg.resources, stage="score", progress="score (clips)")
        seconds = max(time.time() - started, 1e-9)
        work.stats.update(side_store_rows=write_side_store(scored, work.tmp_uri, cfg.dedup))
        for row in scored:  # the side store holds them now; the driver lets them go
            for name in WIDE_COLUMNS:
                row.pop(name, None)
        add_duplicate_groups(scored, cfg, work.tmp_uri)
        ok = [r for r in scored if r["error"] is None]
        per_filter = timing_summary(ok)
        work.metrics.update(scored=len(ok), clips_per_s=len(ok) / seconds,
                            **{f"filter_seconds_{k}": v for k, v in per_filter.items()},
                            duplicates_dropped=sum(r["dup_keep"] is False for r in ok))
        work.stats.update(scored=len(ok), clips_per_s=round(len(ok) / seconds, 3))
        summary = os.path.join(work.scratch_dir, "filter_seconds.json")
        with open(summary, "w", encoding="utf-8") as fh:
            json.dump(per_filter, fh, indent=1)
        work.artifacts.append(summary)
        return pa.Table.from_pylist(scored, schema=SCORED_SCHEMA)

    return run_stage(ctx, "score", cfg, [clips], body)

