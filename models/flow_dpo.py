"""Flow-DPO, the motion-preference objective of report section 3.4.1 (Eq. 4).

For a preference pair (chosen w, rejected l) both videos are noised at the SAME flow-matching time t with
the SAME noise x0 (Eq. 1: x_t = t x1 + (1 - t) x0, x1 = data, t = 1 on data), so the policy's and the frozen
reference's errors differ only through the videos themselves. With per-sample flow-matching errors L
(Eq. 3, velocity target x1 - x0 of Eq. 2),

    loss = -log sigmoid(-beta/2 * ((L_w - L_l) - (L_ref_w - L_ref_l)))                              (Eq. 4)

The sigmoid's argument is the implicit reward margin: r_w - r_l with r = -beta/2 (L - L_ref), i.e. how
much more the policy improved over the reference on the chosen video than on the rejected one. The
report writes L = 0.5 ||u - v||^2; any fixed scale of L (a mean instead of a sum, the 0.5) only rescales
beta, so beta must be tuned with the error definition used (`flow_matching_error`: mean over elements).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t of shape (B,) broadcast over a sample's other dims; any other shape must already broadcast."""
    return t.reshape(-1, *[1] * (like.dim() - 1)) if t.dim() == 1 else t


def shared_noise_pair(x_w: torch.Tensor, x_l: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy_w, noisy_l, velocity_w, velocity_l): both clean latents interpolated with the same `noise`
    at the same `t` (Eq. 1), and their velocity targets x1 - x0 (Eq. 2)."""
    if x_w.shape != x_l.shape or noise.shape != x_w.shape:
        raise ValueError(f"chosen {tuple(x_w.shape)}, rejected {tuple(x_l.shape)} and noise "
                         f"{tuple(noise.shape)} must share one shape")
    t = _per_sample(t, x_w).to(x_w.dtype)
    return t * x_w + (1 - t) * noise, t * x_l + (1 - t) * noise, x_w - noise, x_l - noise


def flow_matching_error(prediction: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """Per-sample squared error of a velocity prediction (Eq. 3), averaged over all but the batch dim."""
    return (prediction - velocity).pow(2).flatten(1).mean(1)


def flow_dpo_loss(err_w: torch.Tensor, err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor,
                  beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 4 averaged over the batch, and the round's metrics (what tells a round worked): implicit reward margin, chosen and
    rejected policy errors, preference accuracy (margin > 0). Reference errors are treated as constants."""
    ref_err_w, ref_err_l = ref_err_w.detach(), ref_err_l.detach()
    reward_w, reward_l = -beta / 2 * (err_w - ref_err_w), -beta / 2 * (err_l - ref_err_l)
    margin = reward_w - reward_l  # = -beta/2 ((L_w - L_l) - (L_ref_w - L_ref_l))
    loss = -F.logsigmoid(margin).mean()
    metrics = {
        "implicit_reward_margin": margin.mean().item(),
        "implicit_reward_chosen": reward_w.mean().item(),
        "implicit_reward_rejected": reward_l.mean().item(),
        "loss_chosen": err_w.mean().item(), "loss_rejected": err_l.mean().item(),
        "ref_loss_chosen": ref_err_w.mean().item(), "ref_loss_rejected": ref_err_l.mean().item(),
        "accuracy": (margin > 0).float().mean().item(),
    }
    return loss, metrics
