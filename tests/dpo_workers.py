"""Worker functions of tests/test_dpo_launch.py: importable by name in spawned training processes."""

from __future__ import annotations

import torch

from infra.config_train import TrainConfig, TrainStageConfig
from models.dit import load_transformer
from tasks.post.lib.dpo_train import load_pairs, load_reference
from tasks.train.lib.objective_dpo import FlowDPO, PairCache, pair_errors
from tasks.train.lib.worker import make_engine


def reference_partition(job: dict) -> dict:
    """What rank 0 holds of the ZeRO-3 reference, and the reference's per-pair errors on all the pairs at the
    first step's draws (its weights gathered module by module for the forward, on every rank)."""
    stage = TrainStageConfig.model_validate(job["stage"])
    cfg = TrainConfig.model_validate(job["train"])
    engine = make_engine(load_transformer(job["init_dir"]), stage, cfg)
    reference = load_reference(job["init_dir"], stage, cfg)
    try:
        params = list(reference.module.parameters())
        held = sum(p.ds_tensor.numel() for p in params)  # this rank's partition of every weight
        total = sum(p.ds_numel for p in params)
        visible = sum(p.numel() for p in params)  # outside a forward: empty placeholders
        cache = PairCache(load_pairs(job["pairs"])["pairs"])
        batch = cache.collate(cache.pairs, cfg.latents.text_len)
        x0, t = FlowDPO(reference, cfg, job["beta"]).noise(stage.seed, 0, batch)
        with torch.no_grad():
            errors = [e.tolist() for e in pair_errors(reference, batch, x0, t, False)]
        return {"rank": engine.rank, "world": engine.world_size, "held": held, "total": total, "visible": visible,
                "errors": errors}
    finally:
        reference.destroy()
        engine.close()
