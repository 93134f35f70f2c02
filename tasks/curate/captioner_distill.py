"""Stage ``captioner-distill`` (report section 3.2, SkyCaptioner-V1): the captioner fine-tuned on the
captions the caption stage made with the base model, the sub-experts and fusion, so that one model says
what the experts used to overwrite.

The report distils into Qwen2.5-VL-7B from 2M concept-balanced captions; here the same steps run on the
caption stage's output: clips with a caption are split by a hash of their id (``holdout`` of them are
never trained on), the training share is concept-balanced (at most ``per_category`` clips per main-subject
category), each teacher caption becomes a supervised example of the captioner's own prompt
(``models.captioner_tune``), the base captioner is fine-tuned, and both the base and the distilled
captioner caption the held-out clips. The measure is per-field agreement with the teacher (the fields the
sub-experts and the concept category give), before and after.

Output: one row per clip used (split, category, teacher caption, the base and distilled captions of the
held-out clips), the distilled model under ``captioner/`` (registered in MLflow, alias
``captioner-distill``; the caption stage runs it with ``stages.caption.captioner.model_path`` pointing at
that folder) and ``evaluation.json`` (agreement per field, before and after; the loss of each step).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from infra import storage
from infra.checkpoints import CAPTIONER, register, steps_dir
from infra.config import config_hash, value_hash
from infra.config_caption import CaptionConfig
from infra.config_distill import CaptionerDistillConfig
from infra.config_train import TrainConfig
from infra.errors import retry_input
from infra.manifest import Manifest, read_table
from infra.stage import StageContext, StageWork, run_stage
from infra.video import iter_frames
from models.caption_schema import StructuredCaption
from models.captioner import MARKER, TransformersCaptioner, sample_indices
from models.captioner_tune import FIELDS, agreement, supervised_example
from tasks.curate.lib.captioner_folder import captioner_path
from tasks.curate.lib.captioner_train import save_examples, train_captioner
from tasks.train.lib.launch import launch

log = logging.getLogger("reelflow.captioner_distill")
NAME, EVALUATION = "captioner-distill", "evaluation.json"
SCHEMA = pa.schema([("clip_id", pa.string()), ("split", pa.string()), ("category", pa.string()),
                    ("teacher", pa.string()), ("base", pa.string()), ("distilled", pa.string()), ("error", pa.string())])


def _bucket(clip_id: str) -> float:
    return int(hashlib.sha256(clip_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_of(clip_id: str, holdout: float) -> str:
    """'holdout' or 'train', fixed by the clip id alone (a rerun, or more clips, never moves a clip)."""
    return "holdout" if _bucket(clip_id) < holdout else "train"


def split_rows(rows: list[dict], holdout: float) -> list[dict]:
    """Each row with its ``split``; with two rows or more, neither side is empty (a small pool moves the clip
    nearest the border, so the measure always has a held-out clip and training a clip to learn from)."""
    if len(rows) < 2:
        raise ValueError(f"captioner-distill needs at least 2 captioned clips, got {len(rows)}: "
                         "curate more clips, or switch the stage off (stages.captioner_distill.enabled=false)")
    by_bucket = sorted(rows, key=lambda r: _bucket(str(r["clip_id"])))
    held = sum(split_of(str(r["clip_id"]), holdout) == "holdout" for r in rows)
    held = min(max(held, 1), len(rows) - 1)
    return [{**r, "split": "holdout" if i < held else "train"} for i, r in enumerate(by_bucket)]


def balanced(rows: list[dict], per_category: int | None) -> list[dict]:
    """At most ``per_category`` rows of each category (default: the mean count per category), in input order:
    the head categories are cut, the rare ones kept whole (report 3.2: the captioner's training data is
    concept-balanced)."""
    counts = Counter(r["category"] for r in rows)
    cap = per_category or max(1, math.ceil(len(rows) / max(len(counts), 1)))
    taken: Counter = Counter()
    out = []
    for row in rows:
        if taken[row["category"]] < cap:
            taken[row["category"]] += 1
            out.append(row)
    return out


def clip_samples(uri: str, num_frames: int, fps: float, sample_fps: float, max_frames: int) -> tuple[np.ndarray, float]:
    """The frames the captioner sees (``sample_fps``, at most ``max_frames``) and the rate they were taken at."""
    wanted = set(sample_indices(num_frames, fps, sample_fps, max_frames).tolist())
    with storage.local_copy(uri) as path:
        frames = [f for i, f in iter_frames(path) if i in wanted]
    if not frames:
        raise ValueError(f"{uri}: no frames decoded")
    return np.stack(frames), max(len(frames) / max(num_frames / fps, 1e-6), 1e-3)


def _captions(captioner: TransformersCaptioner, videos: list[tuple[np.ndarray, float]]) -> list[StructuredCaption | None]:
    return [r.caption for r in captioner.caption_batch(videos)]


@dataclass
class Distilled:
    """What :func:`distill` made: the rows used (with ``split``), the held-out captions of the base and the
    distilled captioner, the loss of each step and the measure (:func:`evaluate`)."""

    train: list[dict]
    held: list[dict]
    before: list[StructuredCaption | None]
    after: list[StructuredCaption | None]
    losses: list[float]
    train_seconds: float
    evaluation: dict
    unreadable: list[dict]  # rows whose clip could not be decoded, each with its ``error``


def distill(rows: list[dict], cfg: CaptionerDistillConfig, caption_cfg: CaptionConfig, work_uri: str, *,
            launcher: TrainConfig | None = None, steps_dir: str | None = None, storage_path: str | None = None,
            tracking: dict | None = None, share_root: str | None = None) -> Distilled:
    """Split, balance, fine-tune and measure on captioned clip rows (``clip_id``, ``clip_uri``, ``num_frames``,
    ``fps``, ``category``, ``caption_json``). The fine-tuning is a job of the training launcher (``launcher``:
    the train config whose ``ray_train``/``dist_backend``/``max_failures`` it follows; None = in this process)
    with ``cfg.num_workers`` workers of ``cfg.resources``, resumable from ``steps_dir``; the supervised
    examples and the distilled captioner (``captioner/``) go under ``work_uri`` (local or the run root's
    store, so that a cluster's workers read and write them). ``tracking``: the stage's MLflow run
    (``tracking_uri``, ``experiment``, ``mlflow_run``) for the loss curve; ``share_root``: a remote run root
    the base captioner is shared under when it is a folder of this node."""
    cap_cfg = caption_cfg.captioner
    videos, unreadable = {}, []
    for row in sorted(rows, key=lambda r: hashlib.sha256(str(r["clip_id"]).encode()).hexdigest())[:cfg.max_clips]:
        # An unreadable clip is that clip's error row; a machine fault (S3 5xx) is retried, then fails the stage.
        got, exc = retry_input(lambda row=row: clip_samples(row["clip_uri"], int(row["num_frames"]), float(row["fps"]),
                                                            cap_cfg.sample_fps, cap_cfg.max_frames),
                               f"captioner-distill: reading {row['clip_uri']}")
        if exc is None:
            videos[row["clip_id"]] = got
        else:
            unreadable.append({**row, "split": "unused", "error": f"{row['clip_uri']}: {type(exc).__name__}: {exc}"})
    rows = split_rows([r for r in rows if r["clip_id"] in videos], cfg.holdout)
    held = [r for r in rows if r["split"] == "holdout"]
    train = balanced([r for r in rows if r["split"] == "train"], cfg.per_category)
    base_uri = captioner_path(caption_cfg)
    base_path = storage.fetch_folder(base_uri) if storage.is_remote(base_uri) else base_uri
    out_uri = storage.join(work_uri, CAPTIONER)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads or threads)
    try:
        student = TransformersCaptioner(base_path, cap_cfg)
        teacher = [StructuredCaption.model_validate_json(r["caption_json"]) for r in held]
        before = _captions(student, [videos[r["clip_id"]] for r in held])
        examples = [supervised_example(student.tokenizer, student.model.config.vision_config, *videos[r["clip_id"]],
                                       r["caption_json"], cap_cfg.min_pixels, cap_cfg.max_pixels, cfg.field_weight)
                    for r in train]
        examples_uri = storage.join(work_uri, "examples.pt")
        save_examples(examples, examples_uri)
        del examples, student
        job_base = (storage.share_folder(base_path, share_root, f"captioner-base-{value_hash([base_path])}")
                    if share_root and not storage.is_remote(base_uri) else base_uri)
        job = {"base": job_base, "examples": examples_uri, "out_dir": out_uri, "steps_dir": steps_dir,
               "checkpoint_every": cfg.checkpoint_every, "lr": cfg.lr, "epochs": cfg.epochs, "batch": cfg.batch,
               "seed": cfg.seed, "weight_decay": cfg.weight_decay, "torch_threads": cfg.torch_threads,
               **(tracking or {})}
        launcher = (launcher or TrainConfig()).model_copy(update={"num_workers": cfg.num_workers,
                                                                  "resources": cfg.resources, "engine": "plain"})
        started = time.time()
        losses = launch(train_captioner, job, launcher, storage_path)
        train_seconds = time.time() - started
        storage.remove(examples_uri)
        distilled = TransformersCaptioner(storage.fetch_folder(out_uri), cap_cfg)
        after = _captions(distilled, [videos[r["clip_id"]] for r in held])
    finally:
        torch.set_num_threads(threads)
    storage.write_text(storage.join(out_uri, MARKER), json.dumps({"distilled_from": base_uri, "stage": NAME}))
    evaluation = evaluate(before, after, teacher)
    evaluation.update(train_clips=len(train), holdout_clips=len(held), train_seconds=train_seconds,
                      train_categories=dict(Counter(r["category"] for r in train)), loss=[round(x, 5) for x in losses],
                      workers=cfg.num_workers, launcher="ray-train" if launcher.ray_train else
                      ("processes" if cfg.num_workers > 1 else "in-process"))
    evaluation["unreadable_clips"] = len(unreadable)
    return Distilled(train, held, before, after, losses, train_seconds, evaluation, unreadable)


def evaluate(before: list, after: list, teacher: list[StructuredCaption]) -> dict:
    """Per-field agreement with the teacher before and after, their means, and the distilled captions' validity."""
    out = {"fields": list(FIELDS), "before": agreement(before, teacher), "after": agreement(after, teacher),
           "valid_after": sum(c is not None for c in after) / len(after)}
    for when in ("before", "after"):
        out[f"mean_{when}"] = float(np.mean(list(out[when].values())))
    return out


def run(ctx: StageContext, cfg: CaptionerDistillConfig, caption_cfg: CaptionConfig, captions: Manifest) -> Manifest:
    """Stage ``captioner-distill`` on the caption stage's manifest."""

    def body(work: StageWork) -> pa.Table:
        table = read_table(captions)
        rows = table[table["error"].isna() & table["caption_json"].notna()].to_dict("records")
        key = value_hash([config_hash(cfg), _caption_key(caption_cfg), captions.fingerprint])
        result = distill(rows, cfg, caption_cfg, work.tmp_uri, launcher=ctx.cfg.train, steps_dir=steps_dir(ctx, NAME, key),
                         storage_path=storage.join(ctx.run_uri, ".ray-train", NAME),
                         tracking={"tracking_uri": ctx.tracker.tracking_uri, "experiment": ctx.cfg.tracking.experiment,
                                   "mlflow_run": work.mlflow_run}, share_root=ctx.cfg.storage.run_root)
        evaluation = result.evaluation
        for when in ("before", "after"):
            work.metrics.update({f"agreement_{when}_{k.replace('.', '_')}": v for k, v in evaluation[when].items()})
            work.metrics[f"agreement_{when}_mean"] = evaluation[f"mean_{when}"]
        work.metrics.update(train_seconds=result.train_seconds, final_loss=result.losses[-1],
                            first_loss=result.losses[0], valid_after=evaluation["valid_after"])
        text = json.dumps(evaluation, indent=1)
        storage.write_text(storage.join(work.tmp_uri, EVALUATION), text)
        with open(os.path.join(work.scratch_dir, EVALUATION), "w", encoding="utf-8") as fh:
            fh.write(text)
        work.artifacts.append(os.path.join(work.scratch_dir, EVALUATION))
        work.stats.update(captioner=storage.join(work.final_uri, CAPTIONER), agreement_before=evaluation["mean_before"],
                          agreement_after=evaluation["mean_after"], train_clips=len(result.train),
                          holdout_clips=len(result.held))
        log.warning("captioner-distill: agreement with the teacher on %d held-out clips %.3f -> %.3f (%d training "
                    "clips, %.0fs)", len(result.held), evaluation["mean_before"], evaluation["mean_after"],
                    len(result.train), result.train_seconds)
        by_id = {r["clip_id"]: (b, a) for r, b, a in zip(result.held, result.before, result.after, strict=True)}
        out = [{"clip_id": r["clip_id"], "split": r["split"], "category": r["category"], "teacher": r["caption_json"],
                "base": _json(by_id.get(r["clip_id"], (None, None))[0]),
                "distilled": _json(by_id.get(r["clip_id"], (None, None))[1]), "error": r.get("error")}
               for r in result.train + result.held + result.unreadable]
        return pa.Table.from_pylist(out, schema=SCHEMA)

    published = run_stage(ctx, NAME, cfg, [captions], body, key_extra=_caption_key(caption_cfg))
    register(ctx, published, "captioner")
    return published


def _json(caption: StructuredCaption | None) -> str | None:
    return caption.model_dump_json() if caption is not None else None


def _caption_key(caption_cfg: CaptionConfig) -> str:
    """The base captioner and its sampling are inputs too (they decide the examples and the start point)."""
    c = caption_cfg.captioner
    return hashlib.sha256(json.dumps([c.model_path, c.sample_fps, c.max_frames, c.min_pixels, c.max_pixels,
                                      c.string_cap]).encode()).hexdigest()[:12]
