"""Stage ``reward`` (report section 3.4.1): the motion-quality reward model, trained on preference pairs.

A Qwen2.5-VL backbone with a scalar head (`models.reward_model`), no prompt context (motion quality is
context-agnostic), fitted with the Bradley-Terry-with-ties loss (`models.reward_loss`, tie parameter
learnt) on the labelled pairs of stage ``pairs``. Pairs are split by source clip (human pairs by prompt),
so no clip is seen in both training and evaluation. Every video is decoded once; ``cfg.frames`` frames,
in consecutive pairs (t, t + 1) spread over the clip (a held frame, noise and flicker show between
neighbours), stay in memory for the stage. Training updates the whole backbone (a random backbone has no
features to keep frozen; a 7B one needs the GPU engines) and the head, at ``cfg.head_lr_scale`` times the
rate; the head reads the mean and max of the video tokens (``cfg.pooling``); ``cfg.augment`` flips and
crops both videos of a pair alike. How far a short CPU run gets on the pairs stage's real output is
measured by ``benchmarks/reward.py`` (``benchmarks/results/reward.json``).

Output: one row per input pair with its split and the two scores, the model folder under
``reward_model/`` (registered in MLflow, alias ``reward``) and ``evaluation.json`` (held-out and train
accuracy with ties excluded and included, tie calibration, accuracy per distortion kind).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from infra import storage
from infra.checkpoints import REWARD_MODEL, register, reward_model_dir
from infra.config_post import RewardConfig
from infra.manifest import Manifest, read_table
from infra.stage import StageContext, StageWork, run_stage
from infra.video import iter_frames
from models.reward_loss import (
    A_BETTER,
    B_BETTER,
    TIE,
    TieParameter,
    btt_loss,
    pairwise_accuracy,
    tie_calibration,
)
from models.reward_model import RewardModel, RewardModelConfig, build_tiny_reward_model, sample_indices

log = logging.getLogger("reelflow.reward")
MODEL_DIR, EVALUATION = REWARD_MODEL, "evaluation.json"
LABELS = {"a": A_BETTER, "b": B_BETTER, "tie": TIE}
SCORE_BATCH = 16  # clips per forward pass when scoring
MIN_TIE_SHARE = 0.02  # floor of the initial tie probability at equal scores (log theta > 0)
SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("kind", pa.string()), ("distortion", pa.string()), ("split_key", pa.string()),
    ("split", pa.string()), ("excluded_by", pa.string()), ("label", pa.string()),
    ("a_uri", pa.string()), ("b_uri", pa.string()), ("score_a", pa.float64()), ("score_b", pa.float64()), ("error", pa.string()),
])


# --- pure per-pair functions ----------------------------------------------------------------------
def excluded_by(row: dict) -> str | None:
    """Why a pair is not used (None = usable): an error row, a discarded pair, or no label yet."""
    if row.get("error"):
        return "error"
    if row.get("discarded"):
        return "discarded"
    if row.get("label") not in LABELS or row.get("label_source") == "pending":
        return "unlabelled"
    return None


def split_key(row: dict) -> str:
    """The unit the split keeps whole: the real clip of an automatic pair, the prompt of a human pair."""
    if row.get("kind") == "human" or not row.get("source_clip_id"):
        return f"prompt:{row.get('prompt')}"
    return f"clip:{row['source_clip_id']}"


def distortion(row: dict) -> str:
    """What separates the two videos: ``human``, or the distorted side(s) of an automatic pair
    (``noise`` for real vs noise, ``v2v|t2v`` for two regenerations)."""
    if row.get("kind") == "human":
        return "human"
    sides = sorted({str(d) for d in (row.get("a_desc"), row.get("b_desc")) if d != "real"})
    return "|".join(sides) or "real"


def holdout_keys(keys: list[str], share: float, seed: int) -> set[str]:
    """A seeded ``share`` of the distinct keys (at least one, and at least one left to train on)."""
    unique = sorted(set(keys))
    if len(unique) < 2:
        raise ValueError(f"reward: {len(unique)} source clip/prompt groups; need 2+ to hold some out")
    count = min(max(1, round(share * len(unique))), len(unique) - 1)
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i] for i in order[:count]}


class FrameCache:
    """Each video decoded once: ``frames`` RGB frames in consecutive pairs (`sample_indices`), (T, H, W, 3) uint8."""

    def __init__(self, frames: int):
        self.frames, self.clips = frames, {}

    def __getitem__(self, uri: str) -> np.ndarray:
        if uri not in self.clips:
            with storage.local_copy(uri) as path:
                decoded = [frame for _, frame in iter_frames(path)]
            if not decoded:
                raise ValueError(f"{uri}: no frames")
            self.clips[uri] = np.stack([decoded[i] for i in sample_indices(len(decoded), self.frames)])
        return self.clips[uri]


# --- training and evaluation ----------------------------------------------------------------------
CROP_MIN = 0.8  # augmentation: the crop keeps at least this share of each side


def augment_pair(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same random horizontal flip and crop (a share >= ``CROP_MIN`` of each side, anywhere) for both
    videos of a pair: the pair's difference survives, the pictures' position and orientation do not."""
    flip, scale = rng.random() < 0.5, rng.uniform(CROP_MIN, 1.0, size=2)
    offset = rng.random(2)

    def apply(clip: np.ndarray) -> np.ndarray:
        h, w = clip.shape[1:3]
        ch, cw = max(1, round(h * scale[0])), max(1, round(w * scale[1]))
        y, x = int(offset[0] * (h - ch)), int(offset[1] * (w - cw))
        out = clip[:, y:y + ch, x:x + cw]
        return np.ascontiguousarray(out[:, :, ::-1] if flip else out)

    return apply(a), apply(b)


def train(model: RewardModel, pairs: pd.DataFrame, cache: FrameCache, cfg: RewardConfig,
          on_step=None) -> tuple[list[dict], TieParameter]:
    """``cfg.steps`` AdamW steps on the BTT loss, batches of ``cfg.batch_size`` pairs drawn epoch by epoch
    (seeded); both videos of a batch go through the model in one forward pass."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    a_uris, b_uris = pairs["a_uri"].tolist(), pairs["b_uri"].tolist()
    labels = torch.tensor([LABELS[x] for x in pairs["label"]])
    # Rao-Kupper's P(tie | equal scores) is (theta - 1) / (theta + 1): start it at the training tie share
    # (automatic pairs have none: theta starts near 1, plain Bradley-Terry), then learn it.
    tie_share = min(max((labels == TIE).float().mean().item(), MIN_TIE_SHARE), 0.9)
    tie = TieParameter(math.log((1 + tie_share) / (1 - tie_share)))
    model.train()
    head = set(map(id, model.head.parameters()))
    opt = torch.optim.AdamW([
        {"params": [p for p in model.parameters() if id(p) not in head]},
        {"params": [*model.head.parameters(), *tie.parameters()], "lr": cfg.lr * cfg.head_lr_scale},
    ], lr=cfg.lr, weight_decay=0.0)
    order, history = np.array([], dtype=int), []
    for step in range(cfg.steps):
        if len(order) < min(cfg.batch_size, len(pairs)):
            order = np.concatenate([order, rng.permutation(len(pairs))])
        batch, order = order[:cfg.batch_size], order[cfg.batch_size:]
        started = time.perf_counter()
        views = [(cache[a_uris[i]], cache[b_uris[i]]) for i in batch]
        if cfg.augment:
            views = [augment_pair(a, b, rng) for a, b in views]
        clips = [a for a, _ in views] + [b for _, b in views]
        scores = model(model.prepare(clips))
        loss = btt_loss(scores[:len(batch)], scores[len(batch):], labels[batch], tie())
        opt.zero_grad()
        loss.backward()
        opt.step()
        record = {"step": step, "loss": loss.item(), "log_theta": tie().item(),
                  "seconds": time.perf_counter() - started}
        history.append(record)
        if on_step is not None:
            on_step(record)
    model.eval()
    return history, tie


def score_videos(model: RewardModel, uris: list[str], cache: FrameCache) -> dict[str, float]:
    unique = sorted(set(uris))
    scores = {}
    for i in range(0, len(unique), SCORE_BATCH):
        chunk = unique[i:i + SCORE_BATCH]
        scores.update(zip(chunk, model.score([cache[u] for u in chunk]).tolist(), strict=True))
    return scores


def evaluate(pairs: pd.DataFrame, log_theta: float, tie_margin: float) -> dict:
    """Accuracy (ties excluded / included) and tie calibration over ``pairs`` (columns score_a, score_b,
    label, kind, distortion): overall, automatic pairs only, human pairs only and per distortion kind."""
    def measure(part: pd.DataFrame) -> dict:
        a, b = torch.tensor(part["score_a"].values), torch.tensor(part["score_b"].values)
        label = torch.tensor([LABELS[x] for x in part["label"]])
        result = pairwise_accuracy(a, b, label, tie_margin)
        return {**result, "tie_calibration": tie_calibration(a, b, label, log_theta)}

    if pairs.empty:
        return {"num_pairs": 0}
    result = measure(pairs)
    for kind in ("auto", "human"):
        part = pairs[pairs["kind"] == kind]
        result[kind] = measure(part) if len(part) else {"num_pairs": 0}
    result["per_distortion"] = {name: measure(part) for name, part in pairs.groupby("distortion", sort=True)}
    return result


def flat_metrics(prefix: str, evaluation: dict) -> dict[str, float]:
    """MLflow metric names for an evaluation: ``holdout_accuracy_excl_ties``, ``holdout_auto_...``, ..."""
    keys = ("accuracy_excl_ties", "accuracy_incl_ties", "num_pairs")
    out = {f"{prefix}_{k}": evaluation[k] for k in keys if k in evaluation}
    if "tie_calibration" in evaluation:
        out[f"{prefix}_tie_ece"] = evaluation["tie_calibration"]["ece"]
    for kind in ("auto", "human"):
        out.update({f"{prefix}_{kind}_{k}": v for k, v in evaluation.get(kind, {}).items() if k in keys})
    for name, part in evaluation.get("per_distortion", {}).items():
        out[f"{prefix}_{name.replace('|', '_vs_')}_accuracy_excl_ties"] = part["accuracy_excl_ties"]
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


# --- the stage ------------------------------------------------------------------------------------
def load_reward_model(manifest: Manifest) -> RewardModel:
    folder = reward_model_dir(manifest)
    if not storage.is_remote(folder):
        return RewardModel.load(folder)
    with tempfile.TemporaryDirectory(prefix="reelflow-reward-") as local:
        for uri in storage.list_files(folder):
            target = os.path.join(local, uri.removeprefix(folder).lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            storage.filesystem(uri).get(uri, target)
        return RewardModel.load(local)


def initial_model(ctx: StageContext, cfg: RewardConfig) -> RewardModel:
    """``cfg.backbone`` with a fresh head, or the tiny random Qwen2.5-VL built once in the state dir."""
    model_cfg = RewardModelConfig(pooling=cfg.pooling)
    if cfg.backbone:
        return RewardModel.from_backbone(cfg.backbone, model_cfg, seed=cfg.seed)
    return build_tiny_reward_model(os.path.join(ctx.cfg.state_dir, "models", f"reward-tiny-seed{cfg.seed}"),
                                   seed=cfg.seed, cfg=model_cfg)


def _plain(value):
    """JSON-ready: NaN (an empty subset) as null, numpy numbers as Python ones."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def _save(model: RewardModel, uri: str, scratch: str) -> None:
    if not storage.is_remote(uri):
        model.save(uri)
        return
    local = model.save(os.path.join(scratch, MODEL_DIR))
    for root, _, files in os.walk(local):
        for name in files:
            path = os.path.join(root, name)
            storage.upload(path, storage.join(uri, os.path.relpath(path, local)))


def run(ctx: StageContext, cfg: RewardConfig, pairs: Manifest) -> Manifest:
    from tasks.post.lib.pair_audit import apply_labels, human_labels, labels_key

    labels = human_labels(ctx, pairs)  # human pairs labelled on the audit page (or a labels file)

    def body(work: StageWork) -> pa.Table:
        rid = work.mlflow_run
        rows = apply_labels(read_table(pairs), labels).to_dict("records")
        table = pd.DataFrame({
            "pair_id": [r["pair_id"] for r in rows], "kind": [r.get("kind") for r in rows],
            "distortion": [distortion(r) for r in rows], "split_key": [split_key(r) for r in rows],
            "excluded_by": [excluded_by(r) for r in rows], "label": [r.get("label") for r in rows],
            "a_uri": [r.get("a_uri") for r in rows], "b_uri": [r.get("b_uri") for r in rows],
            "error": [r.get("error") or None for r in rows]})
        used = table["excluded_by"].isna()
        held = holdout_keys(table.loc[used, "split_key"].tolist(), cfg.holdout, cfg.seed)
        table["split"] = np.where(~used, "excluded", np.where(table["split_key"].isin(held), "holdout", "train"))
        cache = FrameCache(cfg.frames)
        model = initial_model(ctx, cfg)
        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.torch_threads or threads)

        def on_step(record: dict) -> None:
            ctx.tracker.log_metrics(rid, {"loss": record["loss"], "log_theta": record["log_theta"]}, record["step"])

        started = time.time()
        try:
            history, tie = train(model, table[table["split"] == "train"], cache, cfg, on_step)
            train_seconds = time.time() - started
            scores = score_videos(model, table.loc[used, "a_uri"].tolist() + table.loc[used, "b_uri"].tolist(), cache)
        finally:
            torch.set_num_threads(threads)
        table["score_a"] = [scores.get(u, math.nan) for u in table["a_uri"]]
        table["score_b"] = [scores.get(u, math.nan) for u in table["b_uri"]]
        log_theta = tie().item()
        evaluation = {split: evaluate(table[table["split"] == split], log_theta, cfg.tie_margin)
                      for split in ("holdout", "train")}
        evaluation.update({
            "log_theta": log_theta, "tie_margin": cfg.tie_margin, "train_seconds": train_seconds,
            "steps": cfg.steps, "first_loss": history[0]["loss"], "final_loss": history[-1]["loss"],
            "excluded": table.loc[~used, "excluded_by"].value_counts().to_dict(),
            "holdout_groups": sorted(held), "loss": [round(r["loss"], 5) for r in history]})
        for split in ("holdout", "train"):
            work.metrics.update(flat_metrics(split, evaluation[split]))
        work.metrics.update({"train_seconds": train_seconds, "final_loss": history[-1]["loss"], "log_theta": log_theta,
                             "excluded_pairs": int((~used).sum()), "videos_decoded": len(cache.clips)})
        _save(model, storage.join(work.tmp_uri, MODEL_DIR), work.scratch_dir)
        text = json.dumps(_plain(evaluation), indent=1)
        storage.write_text(storage.join(work.tmp_uri, EVALUATION), text)
        with open(os.path.join(work.scratch_dir, EVALUATION), "w", encoding="utf-8") as fh:
            fh.write(text)
        work.artifacts.append(os.path.join(work.scratch_dir, EVALUATION))
        holdout = evaluation["holdout"]
        work.stats.update({"reward_model": storage.join(work.final_uri, MODEL_DIR), "log_theta": log_theta,
                           "holdout_accuracy_excl_ties": holdout.get("accuracy_excl_ties"),
                           "holdout_accuracy_incl_ties": holdout.get("accuracy_incl_ties"),
                           "holdout_auto_accuracy_excl_ties": holdout.get("auto", {}).get("accuracy_excl_ties")})
        log.warning("reward: held-out accuracy %.3f (ties excluded) on %d pairs, %d train pairs, %.0fs",
                    holdout.get("accuracy_excl_ties", math.nan), holdout.get("num_pairs", 0),
                    int((table["split"] == "train").sum()), train_seconds)
        return pa.Table.from_pandas(table[SCHEMA.names], schema=SCHEMA, preserve_index=False)

    # New human labels re-train the model: they are not part of the pairs manifest's fingerprint.
    published = run_stage(ctx, "reward", cfg, [pairs], body, labels_key(labels) if labels else "")
    register(ctx, published, "reward")
    return published
