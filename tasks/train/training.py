"""Stage ``training``: every DiT training stage, pretrain-256p / -360p / -540p and sft-540p (report sections 3.3
and 3.4.3), diffusion forcing (3.4.2) and sft-720p; one module, the stage name and objective come from config.

A training stage is a stage like any other (docs/architecture.md): its inputs are the latent-cache
manifest and the previous stage's checkpoint manifest, its output folder holds the loss curve as the
table and the trained diffusers folder under ``checkpoint/``, published with one rename. Step
checkpoints live beside it (``.steps/<stage>-<config hash>``) so a killed stage resumes from its last
step; the finished checkpoint is registered in MLflow with the stage name as its alias.
"""

from __future__ import annotations

import logging
import os
import statistics
from pathlib import Path

import pyarrow as pa

from infra import storage
from infra.checkpoints import CHECKPOINT, checkpoint_dir, checkpoint_dir_of, register, steps_dir
from infra.config import PipelineConfig, config_hash, value_hash
from infra.config_train import TrainConfig
from infra.manifest import Manifest
from infra.stage import StageContext, StageWork, run_stage
from models.checkpoint import init_checkpoint
from models.dit import architecture, check_checkpoint
from tasks.train.lib.samples import sample_checkpoint, sample_size
from tasks.train.lib.worker import train_worker

log = logging.getLogger("reelflow.train")


def _model_folder(cfg: PipelineConfig, given: str | None, key: str, what: str, check, build) -> str:
    """``given`` (a configured folder), validated by ``check``; else a random ``what`` of train.init_profile
    built once by ``build(path)`` under the state dir. Under a remote run root the built folder is uploaded to
    ``<run root>/models/`` (once, marker last): workers on other nodes read it from there, never from the
    driver's state dir."""
    if given:
        check(storage.fetch_folder(given))
        return given
    name = f"{what.replace(' ', '-')}-{cfg.train.init_profile}-seed0"
    path = Path(cfg.state_dir) / "models" / name
    if not path.is_dir():
        log.warning("building a random %s %s at %s (train.%s is null)", cfg.train.init_profile, what, path, key)
        build(str(path))
    return storage.share_folder(str(path), cfg.storage.run_root, name)


def base_checkpoint(cfg: PipelineConfig) -> str:
    """train.base_checkpoint, validated; else a random checkpoint of train.init_profile built once."""
    return _model_folder(cfg, cfg.train.base_checkpoint, "base_checkpoint", "base", check_checkpoint,
                         lambda path: init_checkpoint(cfg.train.init_profile, path, seed=0, diffusion_forcing=True))


def image_encoder(cfg: PipelineConfig) -> str:
    """The I2V stage's CLIP image encoder folder: train.image_encoder, validated; else a random one of
    train.init_profile built once (beside the base DiT)."""
    from models.i2v_checkpoint import build_image_encoder, check_image_encoder

    return _model_folder(cfg, cfg.train.image_encoder, "image_encoder", "image encoder", check_image_encoder,
                         lambda path: build_image_encoder(cfg.train.init_profile, path))


def _weights_fingerprint(path: str) -> str:
    """Identifies a base checkpoint folder in the resume key (path, size and mtime of the DiT weights)."""
    if storage.is_remote(path):
        fs = storage.filesystem(path)
        found = fs.find(storage.join(path, "transformer"), detail=True)
        return value_hash([path] + sorted((os.path.basename(k), int(v["size"])) for k, v in found.items()
                                          if k.endswith(".safetensors")))
    files = sorted(Path(path, "transformer").glob("*.safetensors"))
    return value_hash([str(path)] + [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files])


HISTORY_SCHEMA = pa.schema([
    ("step", pa.int64()), ("loss", pa.float64()), ("lr", pa.float64()), ("grad_norm", pa.float64()),
    ("batch", pa.int64()), ("samples_per_s", pa.float64()), ("tokens_per_s", pa.float64()),
    ("peak_memory_mb", pa.float64()),
])


def run(ctx: StageContext, cfg: TrainConfig, name: str, latents: Manifest, init: Manifest | None) -> Manifest:
    """Train stage ``name`` of ``cfg.stages`` on the cached ``latents``, from ``init`` (or the base checkpoint)."""
    stage = cfg.stages[name]
    if (stage.init_from is None) != (init is None):
        raise ValueError(f"train stage {name}: init_from={stage.init_from!r} but got init manifest "
                         f"{init.stage if init else None!r}")
    init_dir = checkpoint_dir(init) if init is not None else base_checkpoint(ctx.cfg)
    check_checkpoint(storage.fetch_folder(init_dir))  # on an S3 run root: a node-local copy
    if latents.row_count - latents.error_count <= 0:
        raise ValueError(f"train stage {name}: {stage.dataset} has no usable sample at {stage.resolution} "
                         f"(latent cache {latents.stage} is empty); check `reelflow inspect {ctx.run_id} "
                         f"{stage.dataset}` (a manual dataset keeps nothing while its review has no Good verdict)")
    inputs = [latents] + ([init] if init is not None else [])
    i2v = stage.objective == "first_frame"  # sft-i2v: widened into diffusers' I2V transformer (models.i2v)
    encoder_dir = image_encoder(ctx.cfg) if i2v else None
    # What shapes the run besides the stage's own config (which run_stage hashes and logs as params).
    engine = {"engine": cfg.engine, "zero_stage": cfg.zero_stage, "num_workers": cfg.num_workers,
              "mixed_precision": cfg.mixed_precision, "logit_normal": [cfg.logit_normal_mean, cfg.logit_normal_std],
              "text_len": cfg.latents.text_len, "resolution": cfg.resolutions[stage.resolution].model_dump(mode="json"),
              **({"image_encoder": encoder_dir} if i2v else {})}
    key_extra = value_hash([engine, None if init is not None else _weights_fingerprint(init_dir)])

    def body(work: StageWork) -> pa.Table:
        ctx.tracker.log_params(work.mlflow_run, {"train": engine, "init_checkpoint": init_dir})
        out_dir = storage.join(work.tmp_uri, CHECKPOINT)
        job = {"stage": stage.model_dump(mode="json"), "train": cfg.model_dump(mode="json"),
               "latents": latents.model_dump(mode="json"), "init_dir": init_dir, "out_dir": out_dir,
               "steps_dir": steps_dir(ctx, name, config_hash(stage) + key_extra),
               "tracking_uri": ctx.tracker.tracking_uri, "experiment": ctx.cfg.tracking.experiment,
               "mlflow_run": work.mlflow_run, "image_encoder_dir": encoder_dir}
        history = launch_job(job, cfg, storage.join(ctx.run_uri, ".ray-train", name))
        height, width = sample_size(stage, cfg.resolutions)
        if storage.is_remote(out_dir):  # the workers uploaded it; sample it from a fresh local copy
            local_out = os.path.join(work.scratch_dir, CHECKPOINT)
            storage.download_folder(out_dir, local_out)
            out_dir = local_out
        if i2v:  # samples from the conditioning images, and how well frame 0 keeps them, before vs after
            from tasks.train.lib import i2v_eval

            report = i2v_eval.measure(storage.fetch_folder(init_dir), out_dir, storage.fetch_folder(encoder_dir),
                                      latents, cfg.sample, height, width, work.scratch_dir, seed=stage.seed)
            work.artifacts += report["after"].pop("videos") + report["before"].pop("videos")
            for when in ("before", "after"):
                for key in ("first_frame_latent_rel_l2", "first_frame_mae"):
                    work.metrics[f"{key}_{when}"] = report[when][key]
            work.stats["first_frame"] = report
        else:
            work.artifacts += sample_checkpoint(out_dir, cfg.sample, height, width, os.path.join(work.scratch_dir, "samples"))
        first, last = history[0]["loss"], history[-1]["loss"]
        work.metrics.update({"first_loss": first, "final_loss": last, "steps": len(history),
                             "tokens_per_s_median": statistics.median_high(r["tokens_per_s"] for r in history)})
        work.stats.update({"checkpoint": checkpoint_dir_of(work.final_uri), "first_loss": first, "final_loss": last,
                           "architecture": architecture(check_checkpoint(out_dir)["transformer"])})
        return pa.Table.from_pylist(history, schema=HISTORY_SCHEMA)

    published = run_stage(ctx, name, stage, inputs, body, key_extra)
    register(ctx, published, "i2v" if i2v else stage.model)  # the I2V model takes other inputs: a model of its own
    return published


def launch_job(job: dict, cfg: TrainConfig, storage_path: str | None = None) -> list[dict]:
    """``storage_path``: Ray Train's run folder (under the run root, so a cluster's nodes share it)."""
    if cfg.num_workers == 1 and not cfg.ray_train:
        return train_worker(job)
    from tasks.train.lib.launch import launch

    return launch(train_worker, job, cfg, storage_path)
