"""Pretraining phase (report sections 3.3 and 3.4.3), as the report's pseudocode reads:

    for stage in [pretrain-256p, pretrain-360p, pretrain-540p, sft-540p]:
        cache = LatentCache(D_stage, resolution(stage))      # VAE latents + umT5 embeddings, once
        ckpt  = FlowMatching(cache, init=previous ckpt)      # Eq. 1-3, per-stage lr / weight decay

Each stage starts from the previous stage's checkpoint and trains on its curated dataset.
"""

from __future__ import annotations

from prefect import flow

from flows.stages import Stages, UntilReached, stage_task
from flows.summary import attach_prefect_logs, reported
from infra.checkpoints import checkpoint_dir
from infra.config import ConfigError, PipelineConfig
from infra.manifest import Manifest
from infra.session import open_run
from tasks.train import latents, training

latents_task = stage_task(latents.run, "latents", "latents-{dataset.stage}-{resolution_name}")
train_task = stage_task(training.run, "train", "{name}")


def train_stage(ctx, cfg: PipelineConfig, datasets: dict[str, Manifest], name: str,
                checkpoints: dict[str, Manifest]) -> Manifest:
    """Training stage ``name`` of cfg.train.stages: its dataset's latent cache, then training from its
    ``init_from`` checkpoint (looked up in ``checkpoints``; None = the base checkpoint)."""
    if name not in cfg.train.stages:
        raise ConfigError(f"train.stages has no stage {name!r}; the flow runs it here (known: {', '.join(cfg.train.stages)})")
    train, stage = cfg.train, cfg.train.stages[name]
    if stage.init_from and stage.init_from not in checkpoints:
        # e.g. post.dpo.rounds=1 while forcing starts from dpo-3: say which checkpoints exist, not a KeyError
        raise ConfigError(f"train.stages.{name}.init_from is {stage.init_from!r}, which this run has not produced "
                          f"(it has: {', '.join(checkpoints) or 'none'}); set --set train.stages.{name}.init_from=<one "
                          f"of those>")
    init = checkpoints[stage.init_from] if stage.init_from else None
    init_dir = checkpoint_dir(init) if init else training.base_checkpoint(cfg)
    cache = latents_task(ctx, train.latents, datasets[stage.dataset], init_dir, stage.resolution,
                         train.resolutions[stage.resolution], stage.media, stage.fps_only)
    return train_task(ctx, train, name, cache, init)


@flow(name="pretrain", flow_run_name="pretrain-{run_id}")
def pretrain_flow(cfg: PipelineConfig, run_id: str, datasets: dict[str, Manifest],
                  until: str | None = None) -> dict[str, Manifest]:
    """Runs the pretraining stages (phase ``pretrain`` of cfg.train.stages) in order; returns each stage's
    checkpoint manifest by stage name."""
    attach_prefect_logs()
    ctx = open_run(cfg, run_id)
    stages = Stages("pretrain", until)
    with reported(ctx, "pretrain"):
        try:
            for name, stage in cfg.train.stages.items():
                if stage.phase == "pretrain":
                    stages.run(name, train_stage, ctx, cfg, datasets, name, stages.done)
        except UntilReached:
            pass
        return stages.done
