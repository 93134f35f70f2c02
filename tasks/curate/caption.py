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
clips travel in batches of ``captioner.batch_size`` (vLLM batches them on GPU). One LLM engine per actor:
with ``fuse.backend=vllm`` the fusion LLM (a 32B instruct model beside the 7B captioner) runs in a pool of
its own (:class:`FuseWorker`, ``fuse_resources``) over the captioner pool's captions; the template
fusion needs no engine and runs inline.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from infra import storage
from infra.config_caption import CaptionConfig
from infra.contact_sheet import contact_sheet
from infra.errors import retry_input, surface_transient
from infra.manifest import Manifest
from infra.raydata import flat_map_rows
from infra.stage import StageContext, StageWork, run_stage
from infra.tables import read_narrow
from infra.video import iter_frames
from models.camera_motion import MotionParams, estimate_motion, to_gray
from models.caption_schema import CameraMotion, Expression, StructuredCaption
from models.captioner import load_captioner, sample_indices
from models.shot_heads import build_tiny as build_tiny_shot_expert
from tasks.curate.lib.captioner_folder import captioner_path
from tasks.curate.lib.fuse import Fuser

CAPTION_FIELDS = [pa.field(n, pa.string()) for n in ("caption_json", "caption_t2v", "caption_i2v", "category")]


def output_schema(input_schema: pa.Schema) -> pa.Schema:
    names = {f.name for f in CAPTION_FIELDS}
    return pa.schema([f for f in input_schema if f.name not in names] + CAPTION_FIELDS)


@dataclass
class ClipViews:
    fps: float
    samples: np.ndarray  # (S, H, W, 3) uint8 RGB at sample_fps
    greys: list[np.ndarray]  # every frame, grey, at most 480 wide (the motion estimator's input)


def decode_views(path: str, num_frames: int, fps: float, sample_fps: float, max_frames: int) -> ClipViews:
    wanted = set(sample_indices(num_frames, fps, sample_fps, max_frames).tolist())
    samples, greys = [], []
    for i, frame in iter_frames(path):
        greys.append(to_gray(frame))
        if i in wanted:
            samples.append(frame)
    if len(greys) < 2 or not samples:
        raise ValueError(f"only {len(greys)} frames decoded")
    if len(samples) == 1:
        samples.append(samples[0])
    return ClipViews(fps, np.stack(samples), greys)


def apply_experts(caption: StructuredCaption, shot: dict | None, motion: dict | None,
                  expression: Expression | None) -> StructuredCaption:
    """Sub-experts overwrite their fields (report section 3.2, step 2). Expressions belong to faces:
    non-human subjects lose theirs; the main human subject takes the expert's when a face was found."""
    data = caption.model_dump()
    data.update(shot or {})
    if motion is not None:
        data["camera_motion"] = CameraMotion(**motion).model_dump()
    main = caption.subjects.index(caption.main_subject())
    for i, subject in enumerate(data["subjects"]):
        if subject["TYPES"]["type"] != "human":
            subject["expression"] = None
        elif i == main and expression is not None:
            subject["expression"] = expression.model_dump()
    return StructuredCaption.model_validate(data)


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
        self.captioner = load_captioner(captioner_path, cfg.captioner)
        self.shot = None
        if shot_path:
            from models.shot_heads import ShotClassifier

            self.shot = ShotClassifier(shot_path)
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
        samples[i] = (views.samples, _sample_rate(views))

    def __call__(self, item: dict) -> list[dict]:
        rows, names = item["rows"], item["names"]
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
            step = max(1, round(_sample_rate(views) / self.cfg.expression.sample_fps))
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


def _sample_rate(views: ClipViews) -> float:
    """Frames per second of the samples actually taken (long clips are strided below sample_fps)."""
    duration = len(views.greys) / views.fps
    return max(len(views.samples) / max(duration, 1e-6), 1e-3)


def resolve_models(cfg: CaptionConfig) -> tuple[str, str | None]:
    """Model folders; the tiny random ones are built once here, not racing in every actor."""
    captioner = captioner_path(cfg)
    shot = None
    if cfg.shot.enabled:
        shot = cfg.shot.expert_path or build_tiny_shot_expert(os.path.join(cfg.cache_dir, "shot-tiny"))
    return captioner, shot


def caption_rows(rows: list[dict], schema: pa.Schema, cfg: CaptionConfig) -> tuple[list[dict], list[dict]]:
    """Caption ``rows`` (dicts of ``schema``) on Ray Data: (output rows, per-row timing)."""
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


def run(ctx: StageContext, cfg: CaptionConfig, clips: Manifest) -> Manifest:
    """Stage ``caption``: the clip table plus ``caption_json``, ``caption_t2v``, ``caption_i2v``, ``category``."""

    def body(work: StageWork) -> pa.Table:
        table = read_narrow(clips)  # paths resolved against where the run is now; no wide per-clip arrays
        started = time.time()
        rows, timing = caption_rows(table.to_pylist(), table.schema, cfg)
        seconds = max(time.time() - started, 1e-9)
        attempted = [t for t in timing if "attempts" in t]
        ok = [r for r in rows if r["caption_json"] is not None]
        first_try = sum(t.get("attempts") == 1 and r["caption_json"] is not None for r, t in zip(rows, timing, strict=True))
        parts = ("decode", "captioner", "shot", "camera_motion", "expression", "fuse")
        work.metrics.update(
            captioned=len(ok), caption_errors=len(attempted) - len(ok), clips_per_s=len(ok) / seconds,
            validity_rate=len(ok) / max(len(attempted), 1), first_attempt_validity=first_try / max(len(attempted), 1),
            **{f"seconds_{p}": sum(t.get(p, 0.0) for t in timing) for p in parts})
        categories: dict[str, int] = {}
        for r in ok:
            categories[r["category"]] = categories.get(r["category"], 0) + 1
        work.stats.update(captioned=len(ok), clips_per_s=round(len(ok) / seconds, 3), categories=categories,
                          validity_rate=round(len(ok) / max(len(attempted), 1), 4))
        work.artifacts.extend(log_samples(ok[:cfg.sample_captions], work.scratch_dir))
        return pa.Table.from_pylist(rows, schema=output_schema(table.schema))

    return run_stage(ctx, "caption", cfg, [clips], body)


def log_samples(rows: list[dict], folder: str) -> list[str]:
    """Sample captions as JSON and markdown, and a contact sheet of the same clips (numbered)."""
    if not rows:
        return []
    samples = [{"n": n, "clip_id": r["clip_id"], "category": r["category"], "caption": json.loads(r["caption_json"]),
                "t2v": r["caption_t2v"], "i2v": r["caption_i2v"]} for n, r in enumerate(rows, 1)]
    as_json = os.path.join(folder, "sample_captions.json")
    with open(as_json, "w", encoding="utf-8") as fh:
        json.dump(samples, fh, indent=1)
    as_md = os.path.join(folder, "sample_captions.md")
    with open(as_md, "w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(f"## {s['n']}. `{s['clip_id']}` ({s['category']})\n\n**T2V:** {s['t2v']}\n\n**I2V:** {s['i2v']}\n\n"
                     f"```json\n{json.dumps(s['caption'], indent=1)}\n```\n\n")
    sheet = contact_sheet([(r["clip_uri"], None, f"{n}. {r['category']} / {json.loads(r['caption_json'])['shot_type']}")
                           for n, r in enumerate(rows, 1)], os.path.join(folder, "caption_contact_sheet.png"))
    return [as_json, as_md, sheet]
