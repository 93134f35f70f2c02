"""Pretraining phase (report sections 3.3 and 3.4.3), as the report's pseudocode reads:

    for stage in [pretrain-256p, pretrain-360p, pretrain-540p, sft-540p]:
        cache = LatentCache(D_stage, resolution(stage))      # VAE latents + umT5 embeddings, once
        ckpt  = FlowMatching(cache, init=previous ckpt)      # Eq. 1-3, per-stage lr / weight decay

Each stage starts from the previous stage's checkpoint and trains on its curated dataset.
"""

from __future__ import annotations

from prefect import flow

from flows.curate import stage_task
from flows.summary import attach_prefect_logs, reported
from infra.config import PipelineConfig
from infra.manifest import Manifest
from infra.session import open_run
from tasks.train import latents
from tasks.train import training as pretrain

latents_task = stage_task(latents.run, "latents", "latents-{dataset.stage}-{resolution_name}")
train_task = stage_task(pretrain.run, "train", "{name}")


def train_phase(ctx, cfg: PipelineConfig, datasets: dict[str, Manifest], phase: str,
                checkpoints: dict[str, Manifest], until: str | None = None) -> dict[str, Manifest]:
    """Runs the ``phase`` stages of cfg.train.stages in order, each on its dataset's latent cache and from its
    ``init_from`` checkpoint (looked up in ``checkpoints``, which it extends); stops after ``until``."""
    train = cfg.train
    for name, stage in train.stages.items():
        if stage.phase != phase:
            continue
        init = checkpoints[stage.init_from] if stage.init_from else None
        init_dir = pretrain.checkpoint_dir(init) if init else pretrain.base_checkpoint(cfg)
        cache = latents_task(ctx, train.latents, datasets[stage.dataset], init_dir, stage.resolution,
                             train.resolutions[stage.resolution], stage.media, stage.fps_only)
        checkpoints[name] = train_task(ctx, train, name, cache, init)
        if name == until:
            break
    return checkpoints


@flow(name="pretrain", flow_run_name="pretrain-{run_id}")
def pretrain_flow(cfg: PipelineConfig, run_id: str, datasets: dict[str, Manifest],
                  until: str | None = None) -> dict[str, Manifest]:
    """Runs the pretraining stages in order; returns each stage's checkpoint manifest by stage name."""
    attach_prefect_logs()
    ctx = open_run(cfg, run_id)
    with reported(ctx, "pretrain"):
        return train_phase(ctx, cfg, datasets, "pretrain", {}, until)
