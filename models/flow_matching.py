"""Flow matching, as the report writes it (section 3.3, Eq. 1-3).

    t ~ logit-normal(0, 1)            x_0 ~ N(0, I) (noise)     x_1 = the data latent
    x_t = t * x_1 + (1 - t) * x_0     (Eq. 1)
    v_t = x_1 - x_0                   (Eq. 2)
    loss = MSE(u_theta(x_t, c, t), v_t) (Eq. 3)

The DiT is diffusers' ``SkyReelsV2Transformer3DModel``, whose pipelines run the scheduler in the
opposite time direction: sigma = 1 - t is the noise level, the timestep fed to the model is
``1000 * sigma``, and the model's output is the velocity toward the noise (x_0 - x_1), which the
flow-matching UniPC / Euler schedulers integrate from sigma = 1 to 0. So the report's prediction is
``u_theta = -model(x_t, 1000 * (1 - t))``; training with that sign and time keeps every checkpoint
loadable in the reference pipelines unchanged. ``t`` may be one value per sample ([B]) or one per
latent frame ([B, F]: diffusion forcing, report section 3.4.2).
"""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000


def sample_t(batch: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Logit-normal t in (0, 1): sigmoid of N(mean, std^2) (report section 3.3)."""
    return torch.sigmoid(mean + std * torch.randn(batch, generator=generator))


def _expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] or [B, F] -> broadcastable against latents [B, C, F, H, W]."""
    if t.ndim == 1:
        return t.view(-1, 1, 1, 1, 1)
    return t.view(t.shape[0], 1, t.shape[1], 1, 1)


def interpolate(x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. 1: x_t = t * x_1 + (1 - t) * x_0."""
    te = _expand(t, x1).to(x1.dtype)
    return te * x1 + (1 - te) * x0


def velocity(x1: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Eq. 2: v_t = x_1 - x_0."""
    return x1 - x0


def model_timestep(t: torch.Tensor) -> torch.Tensor:
    """The timestep diffusers' SkyReels-V2 DiT expects for report-time t: 1000 * sigma, sigma = 1 - t."""
    return (1 - t) * NUM_TRAIN_TIMESTEPS


def report_prediction(model_output: torch.Tensor) -> torch.Tensor:
    """u_theta in the report's direction (toward the data) from the DiT's output (toward the noise)."""
    return -model_output


def per_sample_error(model_output: torch.Tensor, x1: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Eq. 3's squared error, averaged per sample: [B]. Flow-DPO (Eq. 4) needs it per sample."""
    err = (report_prediction(model_output).float() - velocity(x1, x0).float()) ** 2
    return err.flatten(1).mean(1)


def loss(model_output: torch.Tensor, x1: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Eq. 3: MSE between the prediction and the ground-truth velocity, over the batch."""
    return per_sample_error(model_output, x1, x0).mean()
