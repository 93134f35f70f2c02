"""One training process: load the DiT, wrap it in its engine, run the loop, write the checkpoint.

``train_worker(job)`` is module-level and takes a plain dict, so the same function runs in-process,
in spawned processes, or on Ray Train workers of a cluster (``tasks.train.launch``). Rank 0 logs the
curve to the stage's MLflow run as it goes and writes the final diffusers folder.
"""

from __future__ import annotations

import logging
import os

import torch

from infra.config_train import TrainConfig, TrainStageConfig
from infra.manifest import Manifest
from models.dit import load_transformer, without_fps_embedding, write_checkpoint
from tasks.train.engine import PlainEngine
from tasks.train.loop import LoopSpec, train

log = logging.getLogger("reelflow.train")


def make_engine(model, stage: TrainStageConfig, cfg: TrainConfig):
    if cfg.engine == "deepspeed":
        from tasks.train.engine_deepspeed import DeepSpeedEngine

        return DeepSpeedEngine(model, stage, cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("train.engine=plain is single-process; use train.engine=deepspeed for num_workers > 1")
    return PlainEngine(model, stage)


def _metric_logger(job: dict):
    if not job.get("mlflow_run"):
        return None
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.utils.time import get_current_time_millis

    client = MlflowClient(tracking_uri=job["tracking_uri"])

    def on_step(row: dict) -> None:
        now = get_current_time_millis()
        metrics = [Metric(k, float(v), now, row["step"]) for k, v in row.items() if k != "step"]
        client.log_batch(job["mlflow_run"], metrics=metrics)

    return on_step


def train_worker(job: dict) -> list[dict] | None:
    """Train one stage; returns the per-step history on rank 0 (None elsewhere)."""
    from tasks.latents import open_cache

    stage = TrainStageConfig.model_validate(job["stage"])
    cfg = TrainConfig.model_validate(job["train"])
    torch.manual_seed(stage.seed)
    model = load_transformer(job["init_dir"])
    if not stage.fps_embedding:
        model = without_fps_embedding(model)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if torch.cuda.is_available():
        model = model.cuda()
    engine = make_engine(model, stage, cfg)
    try:
        cache = open_cache(Manifest.model_validate(job["latents"]))
        spec = LoopSpec(stage, cfg, cfg.resolutions[stage.resolution], job["steps_dir"], cfg.latents.text_len)
        state = train(engine, cache, spec, on_step=_metric_logger(job) if engine.rank == 0 else None)
        weights = state.ema or engine.full_state_dict()
        if engine.rank != 0:
            return None
        # A fresh module: under ZeRO-3 the trained one holds only this rank's partition of each weight.
        final = type(model).from_config(model.config)
        final.load_state_dict({k: v.float().cpu() for k, v in weights.items()})
        write_checkpoint(job["init_dir"], final, job["out_dir"])
        return state.history
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
