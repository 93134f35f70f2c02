"""Regenerations of a real clip for the automatic preference pairs (report section 3.4.1).

Progressive distortion, mildest to strongest: V2V (the clip's latent noised to sigma = strength and
denoised back), I2V (regenerated from pure noise with latent frame 0 held at the clip's clean first-frame
latent), T2V (regenerated from the text alone). All three integrate the flow-matching ODE with Euler steps
in diffusers' convention (``models.flow_matching``): sigma = 1 - t is the noise level, the DiT sees timestep
``1000 * sigma`` and predicts the velocity toward the noise, so ``x <- x + (sigma_next - sigma) * v``
walks from noise to data. Classifier-free guidance against the negative prompt's embeddings, cond and
uncond in one batch. Pure torch: the caller loads the DiT and encodes text and video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models import flow_matching as fm

REGENERATIONS = ("v2v", "i2v", "t2v")
FPS_INDEX = 1  # the DF pipelines' fps embedding: 0 for 16 fps, 1 otherwise (24 fps)


@dataclass
class Conditioning:
    """umT5 embeddings [1, L, D] of the prompt and the negative prompt (zero-padded as the pipelines pad)."""

    text: torch.Tensor
    negative: torch.Tensor
    guidance_scale: float


def euler_sigmas(start: float, steps: int) -> torch.Tensor:
    """``steps`` equal Euler steps over noise levels from ``start`` down to 0 (steps + 1 values)."""
    if not 0 < start <= 1 or steps < 1:
        raise ValueError(f"need 0 < start <= 1 and steps >= 1, got start={start}, steps={steps}")
    return torch.linspace(start, 0.0, steps + 1)


def noise_to(latent: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """The clean latent at noise level sigma: Eq. 1 with t = 1 - sigma."""
    return fm.interpolate(latent, noise, torch.full((latent.shape[0],), 1.0 - sigma))


def _velocity(transformer, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """Guided DiT output (velocity toward the noise) at noise level ``sigma`` for a batch of one."""
    guided = cond.guidance_scale != 1.0
    batch = torch.cat([x, x]) if guided else x
    context = torch.cat([cond.text, cond.negative]) if guided else cond.text
    timestep = fm.model_timestep(1 - sigma).expand(batch.shape[0]).to(x.device)
    fps = [FPS_INDEX] * batch.shape[0] if transformer.config.inject_sample_info else None
    out = transformer(hidden_states=batch, timestep=timestep, encoder_hidden_states=context, fps=fps,
                      return_dict=False)[0].float()
    if not guided:
        return out
    positive, negative = out.chunk(2)
    return negative + cond.guidance_scale * (positive - negative)


@torch.no_grad()
def denoise(transformer, latent: torch.Tensor, sigmas: torch.Tensor, cond: Conditioning,
            first_frame: torch.Tensor | None = None) -> torch.Tensor:
    """Euler-integrate ``latent`` (at noise level ``sigmas[0]``) to ``sigmas[-1]``; ``first_frame``
    ([1, C, 1, h, w]) replaces latent frame 0 before every step and at the end (I2V)."""
    x = latent.float().clone()
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        if first_frame is not None:
            x[:, :, :1] = first_frame
        x = x + (sigma_next - sigma) * _velocity(transformer, x, sigma, cond)
    if first_frame is not None:
        x[:, :, :1] = first_frame
    return x


def regenerate(kind: str, transformer, clean: torch.Tensor, cond: Conditioning, steps: int,
               generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """The ``kind`` regeneration of the clip whose normalised latent is ``clean`` ([1, C, F, h, w]);
    ``strength`` is V2V's starting noise level (the others start from pure noise)."""
    if kind not in REGENERATIONS:
        raise ValueError(f"kind must be one of {REGENERATIONS}, got {kind!r}")
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(clean.device)
    if kind == "v2v":
        return denoise(transformer, noise_to(clean.float(), noise, strength), euler_sigmas(strength, steps), cond)
    first = clean[:, :, :1].float() if kind == "i2v" else None
    return denoise(transformer, noise, euler_sigmas(1.0, steps), cond, first_frame=first)
