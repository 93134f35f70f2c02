"""The Diffusion Forcing objective (report section 3.4.2): per-frame noise levels drawn by FoPP.

Each latent frame gets its own timestep index s in [0, T) (0 = clean, T-1 = pure noise), the schedule
non-decreasing along time (``models.fopp``: later frames at least as noisy), mapped to report time
t = 1 - (s + 1) / T, i.e. the DiT's timestep 1000 * (s + 1) / T in [1000/T, 1000], the range diffusers'
DF pipelines feed. The DiT runs with ``enable_diffusion_forcing=True`` (per-frame timestep embedding),
optionally with block-causal attention; the loss is Eq. 3 over all frames.
"""

from __future__ import annotations

import torch

from infra.config_train import TrainConfig
from models import flow_matching as fm
from models.fopp import sample_fopp
from tasks.train.lib.data import Batch
from tasks.train.lib.loop import predict, step_generator

NUM_STEPS = fm.NUM_TRAIN_TIMESTEPS


def fopp_t(batch: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """[B, F] report-time t from FoPP schedules (non-increasing t along frames = non-decreasing noise)."""
    steps = sample_fopp(batch, frames, NUM_STEPS, generator)
    return 1 - (steps.double() + 1) / NUM_STEPS


class DiffusionForcing:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def noise(self, seed: int, step: int, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        gen = step_generator(seed, step)
        b, _, frames = batch.latents.shape[:3]
        t = fopp_t(b, frames, gen).to(batch.latents.dtype)
        return torch.randn(batch.latents.shape, generator=gen, dtype=batch.latents.dtype), t

    def loss(self, model, batch: Batch, x0, t, autocast: bool) -> tuple[torch.Tensor, dict]:
        device = next(model.parameters()).device
        x1, x0, t = batch.latents.to(device), x0.to(device), t.to(device)
        out = predict(model, batch, fm.interpolate(x1, x0, t), t, autocast, diffusion_forcing=True)
        return fm.loss(out, x1, x0), {"t_spread": float((t[:, 0] - t[:, -1]).mean())}
