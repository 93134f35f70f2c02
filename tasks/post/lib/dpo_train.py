"""The training phase of a Flow-DPO round (report section 3.4.1, Eq. 4) as a launcher worker.

``dpo_train_worker(job)`` is module-level and takes a plain dict, so ``tasks.train.lib.launch`` runs it
in-process, in spawned processes or on Ray Train workers, exactly as pretraining's ``train_worker``. Every
worker reads the round's pairs from the step folder (local or S3), builds its policy and the objective,
trains its data-parallel share through the pretraining loop (step checkpoints, resume) and rank 0 writes
the trained DiT as a diffusers folder; the driver measures and publishes it.

The frozen reference is never a deep copy of the policy on the training device (see ``load_reference``):
  * under DeepSpeed ZeRO-3 it is partitioned across the ranks like the policy (a ZeRO-3 engine with no
    optimizer, as DeepSpeed runs inference for models larger than one device): each rank holds
    1/world of its parameters and gathers a layer only for its forward;
  * otherwise it stays on the CPU (offload), loaded from the round's init checkpoint: its predictions
    are a pure function of (weights, noisy latents, t, text), so only the per-pair errors move to the
    policy's device. That costs a CPU forward per step, the price of not holding a second model there.
"""

from __future__ import annotations

import logging
import os
import tempfile

import torch

from infra import storage
from infra.config_train import ResolutionConfig, TrainConfig, TrainStageConfig
from models.checkpoint import pipeline_class_name
from models.dit import load_transformer, write_checkpoint
from tasks.train.lib.loop import LoopSpec, train
from tasks.train.lib.objective_dpo import FlowDPO, PairCache
from tasks.train.lib.worker import make_engine, step_hooks

log = logging.getLogger("reelflow.dpo")


def load_pairs(uri: str) -> dict:
    """The round's pairs as ``tasks.post.dpo.build_pairs`` saved them (any node: local path or S3)."""
    with storage.local_copy(uri) as local:
        return torch.load(local, weights_only=False)


def reference_mode(cfg: TrainConfig) -> str:
    """``zero3`` (partitioned across ranks like the policy) under DeepSpeed ZeRO-3, else ``offload`` (CPU)."""
    return "zero3" if cfg.engine == "deepspeed" and cfg.zero_stage == 3 else "offload"


def load_reference(init_dir: str, stage: TrainStageConfig, cfg: TrainConfig):
    """The frozen reference DiT, never a whole copy on the training device (module doc). Under ZeRO-3 it
    is a DeepSpeed engine: call it after the policy's engine joined the process group, ``destroy()`` it."""
    reference = load_transformer(init_dir).requires_grad_(False).eval()
    if reference_mode(cfg) == "offload":
        return reference
    import deepspeed

    from tasks.train.lib.engine_deepspeed import ds_config

    # No optimizer: ZeRO-3 only partitions the parameters (and gathers them per module in forward).
    config = {k: v for k, v in ds_config(stage, cfg).items()
              if k not in ("gradient_clipping", "zero_allow_untested_optimizer")}
    engine, *_ = deepspeed.initialize(model=reference, config=config, dist_init_required=False)
    engine.eval()  # DeepSpeed's eval() returns None, not the module
    return engine


def dpo_train_worker(job: dict) -> list[dict] | None:
    """Train one round's policy on its pairs; returns the per-step history on rank 0 (None elsewhere)."""
    stage = TrainStageConfig.model_validate(job["stage"])
    cfg = TrainConfig.model_validate(job["train"])
    init_dir = storage.fetch_folder(job["init_dir"])  # this process may run on any node
    pairs = load_pairs(job["pairs"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = load_transformer(init_dir).to(device)
    engine = make_engine(policy, stage, cfg)  # first: it joins (or starts) the process group ZeRO-3 needs
    reference = None
    try:
        reference = load_reference(init_dir, stage, cfg)
        objective = FlowDPO(reference, cfg, job["beta"])
        cache = PairCache(pairs["pairs"])
        spec = LoopSpec(stage, cfg, ResolutionConfig.model_validate(job["resolution"]), job["steps_dir"],
                        cfg.latents.text_len)
        _, hooks = step_hooks(job, engine)
        state = train(engine, cache, spec, objective=objective, **hooks)
        weights = engine.full_state_dict()  # collective under ZeRO: every rank takes part
        if engine.rank != 0:
            return None
        final = type(policy).from_config(policy.config)  # under ZeRO-3 the trained one holds one partition
        final.load_state_dict({k: v.float().cpu() for k, v in weights.items()})
        write_dit(init_dir, final, job["out_dir"])
        return state.history
    finally:
        if hasattr(reference, "destroy"):  # a ZeRO-3 engine
            reference.destroy()
        engine.close()


def write_dit(init_dir: str, dit, out_dir: str) -> None:
    """The trained DiT as a diffusers folder beside the round's frozen parts (uploaded under an S3 root)."""
    if not storage.is_remote(out_dir):
        write_checkpoint(init_dir, dit, out_dir, pipeline_class_name(init_dir))
        return
    with tempfile.TemporaryDirectory(prefix="reelflow-dpo-ckpt-") as local:
        path = write_checkpoint(init_dir, dit, os.path.join(local, "c"), pipeline_class_name(init_dir))
        storage.upload_folder(path, out_dir)
