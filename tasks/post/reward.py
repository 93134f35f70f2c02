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

Training goes through pretraining's launcher (``tasks.train.lib.launch``, ``train.num_workers`` workers: in
this process, local processes or Ray Train), each worker a share of every batch with gradients averaged
(``tasks.post.lib.reward_train``); scoring and evaluation run here on the model rank 0 wrote.

Output: one row per input pair with its split and the two scores, the model folder under
``reward_model/`` (registered in MLflow, alias ``reward``) and ``evaluation.json`` (held-out and train
accuracy with ties excluded and included, tie calibration, accuracy per distortion kind).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from infra import storage
from infra.checkpoints import REWARD_MODEL, register
from infra.config_post import RewardConfig
from infra.manifest import Manifest, read_table
from infra.raydata import local_device
from infra.stage import StageContext, StageWork, run_stage
from models.captioner import build_tiny_captioner
from models.reward_model import RewardModel, RewardModelConfig, build_tiny_reward_model, sample_indices  # noqa: F401
from tasks.post.lib.reward_fit import (  # noqa: F401 (the helpers' names stay reachable from the stage)
    LABELS,
    FrameCache,
    augment_pair,
    distortion,
    evaluate,
    excluded_by,
    flat_metrics,
    holdout_keys,
    score_videos,
    split_key,
    train,
)
from tasks.post.lib.reward_io import load_reward_model, reward_model_dir  # noqa: F401 (re-exported)
from tasks.post.lib.reward_train import reward_train_worker
from tasks.train.lib.launch import launch

log = logging.getLogger("reelflow.reward")
MODEL_DIR, EVALUATION = REWARD_MODEL, "evaluation.json"
SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("kind", pa.string()), ("distortion", pa.string()), ("split_key", pa.string()),
    ("split", pa.string()), ("excluded_by", pa.string()), ("label", pa.string()),
    ("a_uri", pa.string()), ("b_uri", pa.string()), ("score_a", pa.float64()), ("score_b", pa.float64()), ("error", pa.string()),
])


# --- the stage ------------------------------------------------------------------------------------
def backbone_folder(ctx: StageContext, cfg: RewardConfig) -> str:
    """``cfg.backbone``, or the tiny random Qwen2.5-VL built once in the state dir (as
    ``build_tiny_reward_model`` builds it), shared under a remote run root so workers on any node read it."""
    if cfg.backbone:
        return cfg.backbone
    name = f"reward-tiny-seed{cfg.seed}"
    folder = build_tiny_captioner(os.path.join(ctx.cfg.state_dir, "models", name, "tiny-qwen2.5-vl"), seed=cfg.seed)
    return storage.share_folder(folder, ctx.cfg.storage.run_root, name)


def _plain(value):
    """JSON-ready: NaN (an empty subset) as null, numpy numbers as Python ones."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def run(ctx: StageContext, cfg: RewardConfig, pairs: Manifest) -> Manifest:
    from tasks.post.lib.pair_audit import apply_labels, human_labels, labels_key

    labels = human_labels(ctx, pairs)  # human pairs labelled on the audit page (or a labels file)
    # Scores here, in the flow's process (CPU unless the stage declares a GPU); trains through the launcher
    # (one worker in this process on this device, else workers that each take a GPU when they have one).
    device = local_device("reward", cfg.resources)

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
        model_uri = storage.join(work.tmp_uri, MODEL_DIR)
        train_cfg = ctx.cfg.train  # the training launcher's workers (in-process, local processes, Ray Train)
        in_process = train_cfg.num_workers == 1 and not train_cfg.ray_train
        job = {"reward": cfg.model_dump(mode="json"), "backbone": backbone_folder(ctx, cfg), "out_dir": model_uri,
               "pairs": table.loc[table["split"] == "train", ["a_uri", "b_uri", "label"]].to_dict("records"),
               "tracking_uri": ctx.tracker.tracking_uri, "experiment": ctx.cfg.tracking.experiment,
               "mlflow_run": rid, "device": device if in_process else None}
        started = time.time()
        result = launch(reward_train_worker, job, train_cfg, storage.join(ctx.run_uri, ".ray-train", "reward"))
        train_seconds = time.time() - started
        history = result["history"]
        cache = FrameCache(cfg.frames)
        model_dir = model_uri
        if storage.is_remote(model_uri):  # a fresh copy (never the node cache: a retried stage rewrites this URI)
            model_dir = os.path.join(work.scratch_dir, MODEL_DIR)
            storage.download_folder(model_uri, model_dir)
        model = RewardModel.load(model_dir).to(device)  # what rank 0 wrote
        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.torch_threads or threads)
        try:
            scores = score_videos(model, table.loc[used, "a_uri"].tolist() + table.loc[used, "b_uri"].tolist(), cache)
        finally:
            torch.set_num_threads(threads)
        table["score_a"] = [scores.get(u, math.nan) for u in table["a_uri"]]
        table["score_b"] = [scores.get(u, math.nan) for u in table["b_uri"]]
        log_theta = result["log_theta"]
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
