"""Caption: SkyCaptioner JSON per clip, sub-expert overrides, T2V / I2V fusion (report section 3.2).

Per clip, ONE decode gives two views: RGB samples at ``captioner.sample_fps`` (2 fps: the
captioner's video, also what the expression and shot experts see) and every frame as small grey
(the camera-motion estimator needs every frame). Then, in the report's order: the captioner's
structured caption -> sub-experts overwrite their fields (shot type/angle/position, camera motion,
the main human subject's expression) -> fusion into ``caption_t2v`` / ``caption_i2v``.

Output = the input table + ``caption_json``, ``caption_t2v``, ``caption_i2v``, ``category`` (the
main subject's type, for concept balancing). Rows with ``error`` are carried with null captions; a
clip whose caption stays invalid after the retries, or that cannot be decoded, gets ``error``
set: the stage never dies on one clip. Models load once per Ray actor (:class:`CaptionWorker`);
clips travel in batches (:func:`clip_batches`), the captioner takes ``captioner.batch_size`` of them at
once. The workers write their rows as Parquet shards (``infra.shards``; :class:`CaptionBatchWorker`) and
their per-clip seconds beside them: the driver holds no rows, so its memory does not grow with the pool.
One LLM engine per actor: with ``fuse.backend=vllm`` the fusion LLM (a 32B instruct model beside the 7B
captioner) runs in a pool of its own (:class:`FuseShardWorker`, ``fuse_resources``) over the captioner's
shards, rewriting each; the template fusion needs no engine and runs inline.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from infra import storage
from infra.config_caption import CaptionConfig
from infra.errors import retry_input, surface_transient
from infra.manifest import Manifest
from infra.raydata import flat_map_items, flat_map_rows
from infra.shards import PARTS, Shards, part_uri, write_part
from infra.stage import StageContext, StageWork, run_stage
from infra.tables import read_narrow
from models.camera_motion import MotionParams, estimate_motion
from models.caption_schema import Expression, StructuredCaption
from models.captioner import load_captioner
from models.shot_heads import build_tiny as build_tiny_shot_expert
from tasks.curate.lib.caption_report import (
    TIMING,
    TIMING_SCHEMA,
    Totals,
    categories,
    log_samples,
    sample_rows,
    timing_rows,
)
from tasks.curate.lib.caption_views import ClipViews, apply_experts, decode_views, sample_rate
from tasks.curate.lib.captioner_folder import captioner_path
from tasks.curate.lib.fuse import Fuser

CAPTION_FIELDS = [pa.field(n, pa.string()) for n in ("caption_json", "caption_t2v", "caption_i2v", "category")]


def output_schema(input_schema: pa.Schema) -> pa.Schema:
    names = {f.name for f in CAPTION_FIELDS}
    return pa.schema([f for f in input_schema if f.name not in names] + CAPTION_FIELDS)


def _empty(row: dict, names: list[str]) -> dict:
    return {**{k: row.get(k) for k in names}, **{f.name: None for f in CAPTION_FIELDS}}


class CaptionWorker:
    """Ray actor body: captioner, sub-experts (and the template fuser) built once; a batch of clips per call."""

    def __init__(self, cfg: dict, captioner_path: str, shot_path: str | None):
        import cv2
        import torch

        self.cfg = cfg = CaptionConfig.model_validate(cfg)
        torch.set_num_threads(cfg.torch_threads)  # actors are the parallelism; the machine is shared
        cv2.setNumThreads(1)
        # folders shared under a remote run root: this node's cached copy
        self.captioner = load_captioner(storage.fetch_folder(captioner_path), cfg.captioner)
        self.shot = None
        if shot_path:
            from models.shot_heads import ShotClassifier

            self.shot = ShotClassifier(storage.fetch_folder(shot_path))
        self.expression = None
        if cfg.expression_enabled:
            from models.expression import ExpressionExpert

            self.expression = ExpressionExpert(cfg.expression.weights, cfg.expression.min_face)
        self.motion = MotionParams(**cfg.camera_motion.model_dump())
        self.fuser = Fuser(cfg.fuse) if cfg.fuse.backend == "template" else None  # else: FuseWorker's pool

    def _measure(self, i: int, row: dict, timing: list[dict], labels: dict, samples: dict) -> None:
        started = time.perf_counter()
        with storage.local_copy(row["clip_uri"]) as path:
            views = decode_views(path, int(row["num_frames"]), float(row["fps"]),
                                 self.cfg.captioner.sample_fps, self.cfg.captioner.max_frames)
        timing[i]["decode"] = time.perf_counter() - started
        labels[i] = self._experts(views, timing[i])  # every-frame views are dropped here, not batched
        samples[i] = (views.samples, sample_rate(views))

    def __call__(self, item: dict) -> list[dict]:
        """``{"rows", "names"}`` -> ``[{"row", "timing"}]``, ``captioner.batch_size`` clips at a time (a chunk's
        sampled frames are all that is held: high-resolution clips would not fit many at once)."""
        size = self.cfg.captioner.batch_size
        return [pair for start in range(0, len(item["rows"]), size)
                for pair in self._chunk(item["rows"][start:start + size], item["names"])]

    def _chunk(self, rows: list[dict], names: list[str]) -> list[dict]:
        out = [_empty(r, names) for r in rows]
        timing = [{} for _ in rows]
        samples: dict[int, tuple[np.ndarray, float]] = {}  # what the captioner sees
        labels: dict[int, tuple] = {}  # the sub-experts' fields, measured right after the decode
        for i, row in enumerate(rows):
            if row.get("error") is not None:
                continue
            # A machine fault (full disk, S3 5xx) is retried, then fails the stage; an unreadable clip or a
            # failing expert is that clip's error.
            _, exc = retry_input(lambda i=i, row=row: self._measure(i, row, timing, labels, samples),
                                 f"caption: reading {row.get('clip_uri')}")
            if exc is not None:
                out[i]["error"] = f"{row.get('clip_uri')}: caption decode/sub-experts failed ({type(exc).__name__}: {exc})"
        order = sorted(samples)
        started = time.perf_counter()
        results = self.captioner.caption_batch([samples[i] for i in order])
        captions: dict[int, StructuredCaption] = {}
        for i, result in zip(order, results, strict=True):
            timing[i].update(captioner=(time.perf_counter() - started) / len(order), attempts=result.attempts)
            if result.caption is None:
                out[i]["error"] = f"caption invalid after {result.attempts} attempts: {result.error}"
            else:
                captions[i] = apply_experts(result.caption, *labels[i])
        for i, caption in captions.items():
            out[i].update(caption_json=caption.model_dump_json(), category=caption.category)
        if self.fuser is not None:
            fuse_rows(self.fuser, [(i, str(rows[i]["clip_id"]), c, out[i]) for i, c in captions.items()], timing)
        return [{"row": o, "timing": t} for o, t in zip(out, timing, strict=True)]

    def _experts(self, views: ClipViews, timing: dict) -> tuple[dict | None, dict | None, Expression | None]:
        """(shot fields, camera-motion label, main-face expression); None where an expert is off."""
        shot = motion = expression = None
        started = time.perf_counter()
        if self.shot is not None:
            pick = np.unique(np.linspace(0, len(views.samples) - 1, self.cfg.shot.frames).round().astype(int))
            shot = self.shot(views.samples[pick])
        timing["shot"], started = time.perf_counter() - started, time.perf_counter()
        if self.cfg.camera_motion_enabled:
            motion = estimate_motion(views.greys, views.fps, self.motion).label()
        timing["camera_motion"], started = time.perf_counter() - started, time.perf_counter()
        if self.expression is not None:
            step = max(1, round(sample_rate(views) / self.cfg.expression.sample_fps))
            expression = self.expression(list(views.samples[::step]))
        timing["expression"] = time.perf_counter() - started
        return shot, motion, expression


def fuse_rows(fuser: Fuser, todo: list[tuple[int, str, StructuredCaption, dict]], timing: list[dict]) -> None:
    """Fill caption_t2v / caption_i2v of the captioned rows ``(index, clip_id, caption, row)``: one LLM batch."""
    started = time.perf_counter()
    fused = fuser.fuse_batch([(cid, caption) for _, cid, caption, _ in todo])
    for (i, _, _, row), (t2v, i2v) in zip(todo, fused, strict=True):
        timing[i]["fuse"] = (time.perf_counter() - started) / len(todo)
        row.update(caption_t2v=t2v, caption_i2v=i2v)


class FuseWorker:
    """Ray actor body of the fusion pool (``fuse.backend=vllm``): the LLM engine loads once; an item is a batch
    of captioned rows, returned with their fused captions and seconds."""

    def __init__(self, cfg: dict):
        self.fuser = Fuser(CaptionConfig.model_validate(cfg).fuse)

    def __call__(self, item: list[dict]) -> list[dict]:
        timing = [{} for _ in item]
        fuse_rows(self.fuser, [(i, str(row["clip_id"]), StructuredCaption.model_validate_json(row["caption_json"]), row)
                               for i, row in enumerate(item)], timing)
        return [{"row": row, "fuse": t["fuse"]} for row, t in zip(item, timing, strict=True)]


def resolve_models(cfg: CaptionConfig, run_root: str | None = None) -> tuple[str, str | None]:
    """Model folders; the tiny random ones are built once here, not racing in every actor, and handed to the
    actors as workers on any node can read them: under a remote ``run_root`` shared there, else absolute."""
    def shared(folder: str, name: str) -> str:
        return storage.share_folder(folder, run_root or "", name)

    captioner = cfg.captioner.model_path or shared(captioner_path(cfg), "captioner-tiny")
    shot = None
    if cfg.shot.enabled:
        shot = cfg.shot.expert_path or shared(build_tiny_shot_expert(os.path.join(cfg.cache_dir, "shot-tiny")),
                                              "shot-tiny")
    return captioner, shot


def caption_rows(rows: list[dict], schema: pa.Schema, cfg: CaptionConfig) -> tuple[list[dict], list[dict]]:
    """Caption ``rows`` (dicts of ``schema``) on Ray Data, every row gathered on the driver: (output rows,
    per-row timing). The stage itself runs :func:`caption_shards`; this path is the reference it must match."""
    captioner, shot = resolve_models(cfg)
    size = cfg.captioner.batch_size
    items = [{"rows": rows[i:i + size], "names": schema.names} for i in range(0, len(rows), size)]
    with surface_transient():  # a persistent fault fails the stage: nothing is published
        pairs = flat_map_rows(items, CaptionWorker, {"cfg": cfg.model_dump(), "captioner_path": captioner,
                                                     "shot_path": shot},
                              cfg.resources, stage="caption", progress=f"caption (batches of {size} clips)")
    rows, timing = [p["row"] for p in pairs], [p["timing"] for p in pairs]
    todo = [i for i, row in enumerate(rows) if row["caption_json"] is not None]
    if cfg.fuse.backend != "template" and todo:  # the fusion LLM: its own pool, after every captioner engine
        batches = [[rows[i] for i in todo[k:k + size]] for k in range(0, len(todo), size)]
        with surface_transient():
            fused = flat_map_rows(batches, FuseWorker, {"cfg": cfg.model_dump()}, cfg.fuse_resources,
                                  stage="caption.fuse", progress=f"fuse (batches of {size} captions)")
        for i, result in zip(todo, fused, strict=True):
            rows[i], timing[i]["fuse"] = result["row"], result["fuse"]
    return rows, timing


class CaptionBatchWorker(CaptionWorker):
    """Ray actor body of the sharded stage: a batch of clips per call; its rows go to the stage's shard
    (``infra.shards``), its per-clip seconds to a timing part beside it; the driver holds neither."""

    def __init__(self, cfg: dict, captioner_path: str, shot_path: str | None, timing_folder: str):
        super().__init__(cfg, captioner_path, shot_path)
        self.timing_folder = timing_folder

    def __call__(self, batch: dict) -> list[dict]:
        pairs = super().__call__({"rows": batch["clips"], "names": batch["names"]})
        write_part(timing_rows(pairs), TIMING_SCHEMA, self.timing_folder, batch["index"])
        return [p["row"] for p in pairs]


class FuseShardWorker(FuseWorker):
    """Ray actor body of the fusion pool over the captioner's shards (``fuse.backend=vllm``): an item is a
    shard's index; its captioned rows are fused and the shard rewritten whole. Returns the fusion seconds."""

    def __init__(self, cfg: dict, folder: str, schema: pa.Schema):
        super().__init__(cfg)
        self.folder, self.schema = folder, schema

    def __call__(self, index: int) -> list[dict]:
        with storage.open_uri(part_uri(self.folder, index), "rb") as fh:
            rows = pq.read_table(fh, schema=self.schema).to_pylist()
        todo = [(i, str(r["clip_id"]), StructuredCaption.model_validate_json(r["caption_json"]), r)
                for i, r in enumerate(rows) if r["caption_json"] is not None]
        timing = [{} for _ in rows]
        if todo:
            fuse_rows(self.fuser, todo, timing)
            write_part(rows, self.schema, self.folder, index)
        return [{"fuse": sum(t.get("fuse", 0.0) for t in timing)}]


# The progress bar's label (tests watch it to act while the stage is under way).
PROGRESS = "caption (clip batches)"


def clip_batches(table: pa.Table, actors: int, batch: int) -> list[dict]:
    """The input table's rows in batches (one shard each): about eight per actor so the pool stays balanced,
    at most 32 clips so a lost worker costs little, rounded up to whole captioner batches."""
    size = max(1, min(32, table.num_rows // max(8 * actors, 1)))
    size = -(-size // batch) * batch  # whole captioner batches: the same batches as one item per batch
    return [{"index": i, "clips": table.slice(start, size).to_pylist(), "names": table.schema.names}
            for i, start in enumerate(range(0, table.num_rows, size))]


def caption_shards(table: pa.Table, cfg: CaptionConfig, tmp_uri: str, totals: Totals, run_root: str | None = None
                   ) -> Shards:
    """Caption ``table`` on Ray Data, the workers writing the output as shards under ``tmp_uri`` (the driver
    gets a :class:`Shards` handle and adds the per-clip seconds to ``totals``)."""
    captioner, shot = resolve_models(cfg, run_root)
    schema, timing = output_schema(table.schema), storage.join(tmp_uri, TIMING)
    batches = clip_batches(table, cfg.resources.actors or 2, cfg.captioner.batch_size)
    kwargs = {"cfg": cfg.model_dump(), "captioner_path": captioner, "shot_path": shot, "timing_folder": timing}
    with surface_transient():  # a persistent fault fails the stage: nothing is published
        shards = flat_map_items(batches, CaptionBatchWorker, kwargs, schema, cfg.resources, stage="caption",
                                shard_dir=storage.join(tmp_uri, PARTS), progress=PROGRESS)
    del batches
    totals.add_parts(timing)
    if cfg.fuse.backend != "template" and shards.num_rows:  # the fusion LLM: its own pool, after every captioner
        with surface_transient():
            fused = flat_map_rows([i for i in sorted(shards.counts) if shards.counts[i]], FuseShardWorker,
                                  {"cfg": cfg.model_dump(), "folder": shards.folder, "schema": schema},
                                  cfg.fuse_resources, stage="caption.fuse", progress="fuse (caption shards)")
        totals.seconds["fuse"] += sum(f["fuse"] for f in fused)
    return shards


def run(ctx: StageContext, cfg: CaptionConfig, clips: Manifest) -> Manifest:
    """Stage ``caption``: the clip table plus ``caption_json``, ``caption_t2v``, ``caption_i2v``, ``category``."""

    def body(work: StageWork) -> Shards:
        table = read_narrow(clips)  # paths resolved against where the run is now; no wide per-clip arrays
        started, totals = time.time(), Totals()
        shards = caption_shards(table, cfg, work.tmp_uri, totals, ctx.cfg.storage.run_root)
        del table
        seconds = max(time.time() - started, 1e-9)
        work.metrics.update(totals.metrics(seconds))
        work.stats.update(captioned=totals.ok, clips_per_s=round(totals.ok / seconds, 3),
                          categories=categories(shards.column_values(["caption_json", "category"])),
                          validity_rate=round(totals.ok / max(totals.attempted, 1), 4))
        work.artifacts.extend(log_samples(sample_rows(shards, cfg.sample_captions), work.scratch_dir))
        return shards

    return run_stage(ctx, "caption", cfg, [clips], body)
