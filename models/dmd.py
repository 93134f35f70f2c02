"""Distribution Matching Distillation of a few-step generator (report section 3.5; Yin et al. 2024, "One-step
Diffusion with Distribution Matching Distillation", arXiv 2311.18828; DMD2, arXiv 2405.14867).

Three copies of the final DiT: the generator G (trained, few steps), the frozen teacher ("real score") and a
"fake score" network trained on G's samples. In the DiT's convention (models/flow_matching.py) a latent x at
noise level sigma is x_sigma = (1 - sigma) x + sigma eps, the network returns the velocity toward the noise,
v = eps - x, so its data prediction is x_hat = x_sigma - sigma v, and the score of the noised distribution is
s(x_sigma) = -(x_sigma - (1 - sigma) x_hat) / sigma^2. The gradient of KL(p_fake || p_real) with respect to a
generated sample x (DMD Eq. 7) is E[(s_fake - s_real) d x_sigma / d x] = E[(1 - sigma)^2 / sigma^2
(x_hat_fake - x_hat_real)]: its direction is x_hat_fake - x_hat_real. DMD (Eq. 8) weights it per sample by
1 / mean|x - x_hat_real| instead of the sigma factor, which keeps its size even across noise levels.

The generator samples as DMD2's multi-step generator: at each of its K noise levels it predicts the data,
which is re-noised to the next level; here with the noise that prediction implies (the DDIM / Euler step of the
flow ODE) rather than DMD2's fresh draw, so a video is a function of its initial noise alone and compares
seed for seed with the teacher's. Trained by backward simulation (its own samples up to a random level, the
last prediction with gradients). The pure functions here have no state; the stage
(tasks/post/distill_dmd.py) owns the loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_TRAIN_TIMESTEPS = 1000
SETTINGS_FILE = "dmd.json"  # beside a generator's diffusers folder: the noise levels it samples at


def generator_sigmas(steps: int, shift: float) -> list[float]:
    """The generator's K noise levels: uniform in (0, 1], flow-shifted as the checkpoint's scheduler shifts
    its own (sigma' = shift sigma / (1 + (shift - 1) sigma)); e.g. 4 steps, shift 1: 1, .75, .5, .25."""
    base = [1.0 - k / steps for k in range(steps)]
    return [shift * s / (1 + (shift - 1) * s) for s in base]


def _col(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


def noised(x: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_sigma = (1 - sigma) x + sigma noise, sigma [B]."""
    s = _col(sigma, x)
    return (1 - s) * x + s * noise


def data_prediction(x_sigma: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_hat = x_sigma - sigma v for the DiT's velocity v (toward the noise)."""
    return x_sigma - _col(sigma, x_sigma) * velocity


def velocity(model, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor, fps: list[int] | None
             ) -> torch.Tensor:
    """The DiT's output at noise level sigma [B] (timestep 1000 sigma), full-sequence attention."""
    return model(hidden_states=x, timestep=sigma * NUM_TRAIN_TIMESTEPS, encoder_hidden_states=text, fps=fps,
                 return_dict=False)[0]


def guided_velocity(model, x, sigma, text, negative, fps, scale: float) -> torch.Tensor:
    """Classifier-free guidance in one batch of two: uncond + scale (cond - uncond)."""
    if scale <= 1.0:
        return velocity(model, x, sigma, text, fps)
    both = velocity(model, torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([text, negative]),
                    None if fps is None else fps + fps)
    cond, uncond = both.chunk(2)
    return uncond + scale * (cond - uncond)


def dmd_gradient(x: torch.Tensor, x_real: torch.Tensor, x_fake: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """DMD Eq. 7-8: (x_hat_fake - x_hat_real) / mean|x - x_hat_real| per sample; descending it moves the
    generated x toward what the teacher denoises it to and away from what the fake score does."""
    weight = (x - x_real).abs().flatten(1).mean(1).clamp_min(eps)
    return (x_fake - x_real) / _col(weight, x)


def generator_loss(x: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """0.5 mean (x - sg(x - gradient))^2: its gradient with respect to x is `gradient` / x.numel()."""
    return 0.5 * F.mse_loss(x, (x - gradient).detach())


def fake_score_loss(fake_velocity: torch.Tensor, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The fake score's flow-matching loss on generator samples x (detached): its velocity vs noise - x."""
    return F.mse_loss(fake_velocity.float(), (noise - x.detach()).float())


def implied_noise(x_sigma: torch.Tensor, x_hat: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The noise that puts data x_hat at x_sigma: (x_sigma - (1 - sigma) x_hat) / sigma."""
    s = _col(sigma, x_sigma)
    return (x_sigma - (1 - s) * x_hat) / s


def input_at(generator, text: torch.Tensor, fps, sigmas: list[float], noise: torch.Tensor, level: int
             ) -> torch.Tensor:
    """The generator's input at sigmas[level] when it samples from `noise` (at sigmas[0], 1 for text-to-video):
    at each earlier level it predicts the data and re-noises it to the next level with the implied noise."""
    x = noise
    for k in range(level):
        sigma = torch.full((x.shape[0],), sigmas[k], dtype=x.dtype, device=x.device)
        pred = data_prediction(x, velocity(generator, x, sigma, text, fps), sigma)
        x = noised(pred, implied_noise(x, pred, sigma), torch.full_like(sigma, sigmas[k + 1]))
    return x


def sample(generator, text: torch.Tensor, fps, sigmas: list[float], noise: torch.Tensor) -> torch.Tensor:
    """The generator's video (data prediction at its last level) from `noise`: len(sigmas) DiT calls."""
    x = input_at(generator, text, fps, sigmas, noise, len(sigmas) - 1)
    sigma = torch.full((x.shape[0],), sigmas[-1], dtype=x.dtype, device=x.device)
    return data_prediction(x, velocity(generator, x, sigma, text, fps), sigma)
