"""The flow-matching training loop (report section 3.3, Eq. 1-3), engine-agnostic.

Each step: the next bucketed global batch from the cache, noise and logit-normal t drawn from a
generator seeded by (seed, step) for the whole global batch (so N data-parallel ranks see exactly the
noise one process would), this rank's shard, forward, loss, ``engine.step``. Batches and noise are
functions of (seed, step, data position): resuming from a step checkpoint replays them exactly.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from infra.config_train import ResolutionConfig, TrainConfig, TrainStageConfig
from models import flow_matching as fm
from tasks.train.lib import state as ckpt
from tasks.train.lib.data import (
    Batch,
    batch_stream,
    bucket_batch_size,
    collate,
    shard_rows,
    tokens_per_sample,
)

log = logging.getLogger("reelflow.train")


@dataclass
class LoopSpec:
    stage: TrainStageConfig
    train: TrainConfig
    res: ResolutionConfig
    steps_dir: str
    text_len: int


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one step's draws (noise, t) for the whole global batch: a pure function of (seed, step),
    so N data-parallel ranks draw what one process would and a resumed run draws what it drew before."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def step_noise(seed: int, step: int, latents: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_0, t) for a global batch: N(0, I) noise and logit-normal t, a pure function of (seed, step)."""
    gen = step_generator(seed, step)
    t = fm.sample_t(latents.shape[0], gen, cfg.logit_normal_mean, cfg.logit_normal_std)
    x0 = torch.randn(latents.shape, generator=gen, dtype=latents.dtype)
    return x0, t


def predict(model, batch: Batch, xt: torch.Tensor, t: torch.Tensor, autocast: bool,
            diffusion_forcing: bool = False) -> torch.Tensor:
    """The DiT's output for x_t at report-time t ([B] or per frame [B, F] with diffusion forcing)."""
    device = xt.device
    dit = getattr(model, "module", model)  # a DeepSpeed engine wraps the DiT (and has a `config` of its own)
    fps = batch.fps.tolist() if dit.config.inject_sample_info else None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        return model(hidden_states=xt, timestep=fm.model_timestep(t), encoder_hidden_states=batch.text.to(device),
                     fps=fps, enable_diffusion_forcing=diffusion_forcing, return_dict=False)[0]


def forward_loss(model, batch: Batch, x0: torch.Tensor, t: torch.Tensor, autocast: bool) -> torch.Tensor:
    """Eq. 1-3 on one (shard of a) batch: the model sees x_t and 1000 * (1 - t) (see models.flow_matching)."""
    device = next(model.parameters()).device
    x1, x0, t = batch.latents.to(device), x0.to(device), t.to(device)
    return fm.loss(predict(model, batch, fm.interpolate(x1, x0, t), t, autocast), x1, x0)


class FlowMatching:
    """The pretraining / SFT objective. Post-training objectives (diffusion forcing, Flow-DPO) supply the
    same two methods: ``noise`` for the whole global batch (a pure function of seed and step) and ``loss``
    on this rank's shard, returning extra metrics to log."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def noise(self, seed: int, step: int, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return step_noise(seed, step, batch.latents, self.cfg)

    def loss(self, model, batch: Batch, x0, t, autocast: bool) -> tuple[torch.Tensor, dict]:
        return forward_loss(model, batch, x0, t, autocast), {}


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss / 1024


def _update_ema(ema: dict | None, weights: dict, decay: float) -> dict:
    if ema is None:
        return {k: v.detach().float().clone() for k, v in weights.items()}
    for k, v in weights.items():
        ema[k].mul_(decay).add_(v.detach().float(), alpha=1 - decay)
    return ema


def train(engine, cache, spec: LoopSpec, on_step: Callable[[dict], None] | None = None,
          on_sample: Callable[[int], None] | None = None, objective=None) -> ckpt.TrainState:
    """Run ``spec.stage.steps`` optimizer steps, resuming from the latest step checkpoint in steps_dir."""
    cfg, model = spec.stage, engine.module
    objective = objective or FlowMatching(spec.train)
    collate_fn = getattr(cache, "collate", collate)
    state = ckpt.resume(spec.steps_dir, engine)
    if state.step:
        log.warning("resuming %s at step %d (data position %s)", spec.steps_dir, state.step, state.position)
    buckets = cache.buckets()
    # The batch plan does not depend on the world size (see bucket_batch_size); shard_rows splits it.
    sizes = {name: bucket_batch_size(tokens_per_sample(tuple(cache.get(idx[0]).latent.shape)), spec.res)
             for name, idx in buckets.items() if idx}
    stream = batch_stream(buckets, sizes, cfg.seed, state.position)
    autocast = spec.train.mixed_precision == "bf16" and torch.cuda.is_available()
    model.train()
    bar = tqdm(total=cfg.steps, initial=state.step, desc="train", unit="step", disable=engine.rank != 0,
               file=sys.stderr, dynamic_ncols=True)
    while state.step < cfg.steps:
        started = time.perf_counter()
        position, indices = next(stream)
        batch = collate_fn([cache.get(i) for i in indices], spec.text_len)
        x0, t = objective.noise(cfg.seed, state.step, batch)
        # Data parallel: each group of sequence-parallel ranks reads its share of the global batch, weighted
        # so that the engines' mean over ranks is the full batch's mean (a padded share weighs 0).
        rank, world = engine.data_rank, engine.data_world_size
        rows, weight = shard_rows(len(indices), rank, world)
        loss, extra = objective.loss(model, batch.shard(rank, world), x0[rows], t[rows], autocast)
        if weight != 1.0:
            loss, extra = loss * weight, {k: v * weight for k, v in extra.items()}
        stats = engine.step(loss)
        seconds = time.perf_counter() - started
        state.step, state.position = state.step + 1, position
        row = {"step": state.step, "loss": engine.all_reduce_mean(float(loss.detach())), "lr": stats.lr,
               "grad_norm": stats.grad_norm, "batch": len(indices), "samples_per_s": len(indices) / seconds,
               "tokens_per_s": batch.tokens / seconds, "peak_memory_mb": peak_memory_mb(),
               **{k: engine.all_reduce_mean(v) for k, v in extra.items()}}
        state.history.append(row)
        if cfg.ema_decay is not None:
            state.ema = _update_ema(state.ema, engine.full_state_dict(), cfg.ema_decay)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)  # redrawn at tqdm's own pace, not per step
        if on_step and engine.rank == 0:
            on_step(row)
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            ckpt.save(spec.steps_dir, state, engine, spec.train.keep_step_checkpoints, engine.rank)
        if on_sample and cfg.sample_every and state.step % cfg.sample_every == 0 and engine.rank == 0:
            on_sample(state.step)
    bar.close()
    return state
