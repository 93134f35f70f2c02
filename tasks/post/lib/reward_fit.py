"""The reward stage's helpers (report section 3.4.1): which pairs count and how they are split, the decoded
frames of every video, training with the Bradley-Terry-with-ties loss and the accuracy measures."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from infra import storage
from infra.config_post import RewardConfig
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
from models.reward_model import RewardModel, sample_indices

LABELS = {"a": A_BETTER, "b": B_BETTER, "tie": TIE}
SCORE_BATCH = 16  # clips per forward pass when scoring
MIN_TIE_SHARE = 0.02  # floor of the initial tie probability at equal scores (log theta > 0)


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
    return apply_augment(a, b, draw_augment(rng))


def draw_augment(rng: np.random.Generator) -> tuple:
    """One pair's augmentation (flip, crop scales, crop offsets): a fixed number of draws whatever the pair,
    so every data-parallel rank advances ``rng`` alike while it augments only its own share."""
    return rng.random() < 0.5, rng.uniform(CROP_MIN, 1.0, size=2), rng.random(2)


def apply_augment(a: np.ndarray, b: np.ndarray, params: tuple) -> tuple[np.ndarray, np.ndarray]:
    flip, scale, offset = params

    def apply(clip: np.ndarray) -> np.ndarray:
        h, w = clip.shape[1:3]
        ch, cw = max(1, round(h * scale[0])), max(1, round(w * scale[1]))
        y, x = int(offset[0] * (h - ch)), int(offset[1] * (w - cw))
        out = clip[:, y:y + ch, x:x + cw]
        return np.ascontiguousarray(out[:, :, ::-1] if flip else out)

    return apply(a), apply(b)


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Data parallel by hand: the mean of every gradient over the ranks, each rank's loss being its weighted
    share (``shard_rows``), so every rank then takes the single-process step. One flat all-reduce."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    for p, g in zip(params, flat.split([g.numel() for g in grads]), strict=True):
        p.grad = g.view_as(p).clone()


def _mean_over_ranks(value: float, world: int) -> float:
    if world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return float(tensor.item()) / world


def train(model: RewardModel, pairs: pd.DataFrame, cache: FrameCache, cfg: RewardConfig,
          on_step=None, rank: int = 0, world: int = 1) -> tuple[list[dict], TieParameter]:
    """``cfg.steps`` AdamW steps on the BTT loss, batches of ``cfg.batch_size`` pairs drawn epoch by epoch
    (seeded); both videos of a batch go through the model in one forward pass. With ``world`` > 1 ranks (a
    process group up) each takes its ``shard_rows`` share of every batch and the gradients are averaged:
    the steps of one process on the whole batches."""
    from tasks.train.lib.data import shard_rows

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    a_uris, b_uris = pairs["a_uri"].tolist(), pairs["b_uri"].tolist()
    labels = torch.tensor([LABELS[x] for x in pairs["label"]])
    # Rao-Kupper's P(tie | equal scores) is (theta - 1) / (theta + 1): start it at the training tie share
    # (automatic pairs have none: theta starts near 1, plain Bradley-Terry), then learn it.
    tie_share = min(max((labels == TIE).float().mean().item(), MIN_TIE_SHARE), 0.9)
    device = model.head.weight.device  # the stage's declared device (reward's resources)
    tie = TieParameter(math.log((1 + tie_share) / (1 - tie_share))).to(device)
    model.train()
    head = set(map(id, model.head.parameters()))
    opt = torch.optim.AdamW([
        {"params": [p for p in model.parameters() if id(p) not in head]},
        {"params": [*model.head.parameters(), *tie.parameters()], "lr": cfg.lr * cfg.head_lr_scale},
    ], lr=cfg.lr, weight_decay=0.0)
    trained = [p for group in opt.param_groups for p in group["params"]]
    order, history = np.array([], dtype=int), []
    for step in range(cfg.steps):
        if len(order) < min(cfg.batch_size, len(pairs)):
            order = np.concatenate([order, rng.permutation(len(pairs))])
        batch, order = order[:cfg.batch_size], order[cfg.batch_size:]
        started = time.perf_counter()
        rows, weight = shard_rows(len(batch), rank, world)
        augments = [draw_augment(rng) for _ in batch] if cfg.augment else None  # every rank draws them all
        views = [(cache[a_uris[batch[r]]], cache[b_uris[batch[r]]]) for r in rows]
        if augments is not None:
            views = [apply_augment(a, b, augments[r]) for r, (a, b) in zip(rows, views, strict=True)]
        clips = [a for a, _ in views] + [b for _, b in views]
        scores = model(model.prepare(clips))
        loss = btt_loss(scores[:len(rows)], scores[len(rows):], labels[batch[rows]].to(device), tie())
        if weight != 1.0:
            loss = loss * weight
        opt.zero_grad()
        loss.backward()
        if world > 1:
            _average_gradients(trained, world)
        opt.step()
        record = {"step": step, "loss": _mean_over_ranks(loss.item(), world), "log_theta": tie().item(),
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


