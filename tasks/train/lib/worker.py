"""One training process: load the DiT, wrap it in its engine, run the loop, write the checkpoint.

``train_worker(job)`` is module-level and takes a plain dict, so the same function runs in-process,
in spawned processes, or on Ray Train workers of a cluster (``tasks.train.lib.launch``). Rank 0 logs the
curve to the stage's MLflow run as it goes and writes the final diffusers folder.
"""

from __future__ import annotations

import logging
import os
import tempfile

import torch

from infra import storage
from infra.config_train import TrainConfig, TrainStageConfig
from infra.manifest import Manifest
from models.dit import load_transformer, without_fps_embedding, write_checkpoint
from tasks.train.lib import state as ckpt
from tasks.train.lib.engine import PlainEngine
from tasks.train.lib.loop import LoopSpec, train

log = logging.getLogger("reelflow.train")


def make_engine(model, stage: TrainStageConfig, cfg: TrainConfig):
    if cfg.engine == "deepspeed":
        from tasks.train.lib.engine_deepspeed import DeepSpeedEngine

        return DeepSpeedEngine(model, stage, cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("train.engine=plain is single-process; use train.engine=deepspeed for num_workers > 1")
    return PlainEngine(model, stage)


def _tracker(job: dict):
    """The stage's MLflow store, reopened in this process (a worker may be another process or machine)."""
    if not job.get("mlflow_run"):
        return None
    from infra.tracking import Tracker

    return Tracker(job["tracking_uri"], job["experiment"])


def step_hooks(job: dict, engine) -> tuple[object | None, dict]:
    """Rank 0's MLflow tracker and the loop's ``on_step`` hook (each step's metrics on the stage's run); a
    restarted worker group (a lost node, Ray Train's FailureConfig) or a rerun logs the step checkpoint it
    resumes from, so the recovery is part of the stage's record. Other ranks: (None, {})."""
    tracker = _tracker(job) if engine.rank == 0 else None
    if tracker is None:
        return None, {}
    run_id = job["mlflow_run"]
    hooks = {"on_step": lambda row: tracker.log_metrics(run_id, {k: v for k, v in row.items() if k != "step"},
                                                         step=row["step"])}
    if done := ckpt.list_steps(job["steps_dir"]):
        log.warning("recovering %s from step checkpoint %d", job["steps_dir"], done[-1])
        tracker.log_metrics(run_id, {"recovered_from_step": done[-1]}, step=done[-1])
    return tracker, hooks


def _sample_logger(tracker, run_id: str, job: dict, stage: TrainStageConfig, cfg: TrainConfig, engine):
    """Sample videos at fixed prompts/seed every ``sample_every`` steps, logged as run artifacts."""
    from tasks.train.lib.samples import Sampler, frozen_parts, sample_size

    sampler = Sampler(frozen_parts(job["init_dir"]), cfg.sample, *sample_size(stage, cfg.resolutions))

    def on_sample(step: int) -> None:
        if cfg.zero_stage == 3 and engine.world_size > 1:
            log.warning("step %d: no mid-training samples under ZeRO-3 (weights are partitioned)", step)
            return
        with tempfile.TemporaryDirectory() as tmp:
            for path in sampler(engine.module, tmp):
                tracker.log_artifact(run_id, path, f"samples/step-{step:06d}")

    return on_sample


def train_worker(job: dict) -> list[dict] | None:
    """Train one stage; returns the per-step history on rank 0 (None elsewhere)."""
    from tasks.train.lib.latent_cache import open_cache

    stage = TrainStageConfig.model_validate(job["stage"])
    cfg = TrainConfig.model_validate(job["train"])
    # This process may run on any node: what it reads comes from the run root, never a driver path.
    job = {**job, "init_dir": storage.fetch_folder(job["init_dir"])}
    torch.manual_seed(stage.seed)
    model = load_transformer(job["init_dir"])
    if not stage.fps_embedding:
        model = without_fps_embedding(model)
    if stage.causal_block_size:
        model._set_ar_attention(stage.causal_block_size)  # diffusers' block-causal mask (num_frame_per_block)
    objective = None
    if stage.objective == "diffusion_forcing":
        from tasks.train.lib.objective_forcing import DiffusionForcing

        objective = DiffusionForcing(cfg)
    elif stage.objective == "first_frame":  # sft-i2v (report section 5.5)
        from models.i2v import is_i2v, widen_to_i2v
        from models.i2v_checkpoint import check_image_encoder
        from tasks.train.lib.objective_i2v import FirstFrameConditioning

        encoder_dir = storage.fetch_folder(job["image_encoder_dir"])
        if not is_i2v(model.config):  # step 0 is the T2V model; a resumed run then loads its trained weights
            model = widen_to_i2v(model, check_image_encoder(encoder_dir), stage.seed)
        objective = FirstFrameConditioning(cfg, job["init_dir"], encoder_dir, "cuda" if torch.cuda.is_available() else "cpu")
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if torch.cuda.is_available():
        model = model.cuda()
    engine = make_engine(model, stage, cfg)
    try:
        cache = open_cache(Manifest.model_validate(job["latents"]))
        spec = LoopSpec(stage, cfg, cfg.resolutions[stage.resolution], job["steps_dir"], cfg.latents.text_len)
        tracker, hooks = step_hooks(job, engine)
        if tracker is not None and stage.sample_every:
            hooks["on_sample"] = _sample_logger(tracker, job["mlflow_run"], job, stage, cfg, engine)
        state = train(engine, cache, spec, objective=objective, **hooks)
        weights = state.ema or engine.full_state_dict()
        if engine.rank != 0:
            return None
        # A fresh module: under ZeRO-3 the trained one holds only this rank's partition of each weight.
        final = type(model).from_config(model.config)
        final.load_state_dict({k: v.float().cpu() for k, v in weights.items()})
        # A diffusion-forcing DiT serves the DF pipelines whether or not it kept the FPS embedding.
        pipeline = "SkyReelsV2DiffusionForcingPipeline" if stage.objective == "diffusion_forcing" else None

        def write(path: str) -> str:
            out = write_checkpoint(job["init_dir"], final, path, pipeline)
            if stage.objective == "first_frame":  # the I2V pipeline's CLIP image encoder beside the DiT
                from models.i2v_checkpoint import add_image_encoder

                add_image_encoder(out, encoder_dir)
            return out

        if storage.is_remote(job["out_dir"]):
            with tempfile.TemporaryDirectory(prefix="reelflow-ckpt-") as local:
                storage.upload_folder(write(os.path.join(local, "c")), job["out_dir"])
        else:
            write(job["out_dir"])
        return state.history
    finally:
        engine.close()
