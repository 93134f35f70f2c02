"""Bradley-Terry with ties (BTT): the reward model's pairwise loss and its evaluation (report section 3.4.1).

Human motion-preference pairs are labelled A better / B better / tie. We use the Rao-Kupper (1967) model,
as "Reward modeling with ties" (Liu et al. 2024, arXiv 2410.05328) does for BTT reward models: with
strengths pi = exp(r) and a tie parameter theta >= 1,

    P(A > B) = pi_A / (pi_A + theta pi_B) = sigmoid(d - lambda),      d = r_A - r_B, lambda = log theta
    P(B > A) = pi_B / (pi_B + theta pi_A) = sigmoid(-d - lambda)
    P(tie)   = (theta^2 - 1) pi_A pi_B / ((pi_A + theta pi_B)(pi_B + theta pi_A))
             = (theta^2 - 1) sigmoid(d - lambda) sigmoid(-d - lambda).

The three sum to 1. As theta -> 1 (lambda -> 0) the tie probability vanishes and the model is plain
Bradley-Terry, P(A > B) = sigmoid(d). Ties are most likely at d = 0, where P(tie) = (theta - 1)/(theta + 1).
(Davidson's 1970 model, P(tie) proportional to nu sqrt(pi_A pi_B), is the other classic choice; Rao-Kupper
keeps every probability a product of sigmoids, so the log-likelihood is stable in log space.)
lambda is fixed by default (theta = 2, the tie probability at d = 0 is 1/3); `TieParameter` makes it
learnable, kept positive through a softplus.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

A_BETTER, B_BETTER, TIE = 0, 1, 2  # label values; also the columns of `btt_log_probs`
DEFAULT_LOG_THETA = math.log(2.0)


def btt_log_probs(score_a: torch.Tensor, score_b: torch.Tensor,
                  log_theta: float | torch.Tensor = DEFAULT_LOG_THETA) -> torch.Tensor:
    """(..., 3) log [P(A > B), P(B > A), P(tie)] under Rao-Kupper; `log_theta` >= 0 (0 = plain BT, no ties)."""
    log_theta = torch.as_tensor(log_theta, dtype=score_a.dtype, device=score_a.device)
    if (log_theta < 0).any():
        raise ValueError("log_theta must be >= 0 (theta >= 1)")
    d = score_a - score_b
    log_a, log_b = F.logsigmoid(d - log_theta), F.logsigmoid(-d - log_theta)
    # log(theta^2 - 1) = 2 lambda + log(1 - exp(-2 lambda)); -inf at lambda = 0 (no ties in plain BT)
    log_tie_scale = 2 * log_theta + torch.log(-torch.expm1(-2 * log_theta))
    return torch.stack([log_a, log_b, log_tie_scale + log_a + log_b], dim=-1)


def btt_loss(score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor,
             log_theta: float | torch.Tensor = DEFAULT_LOG_THETA) -> torch.Tensor:
    """Mean negative log-likelihood of the labels (A_BETTER, B_BETTER, TIE) under Rao-Kupper."""
    log_probs = btt_log_probs(score_a, score_b, log_theta)
    return -log_probs.gather(-1, label.long().unsqueeze(-1)).squeeze(-1).mean()


class TieParameter(nn.Module):
    """A learnable lambda = log theta = softplus(raw) > 0, initialised at `init_log_theta`."""

    def __init__(self, init_log_theta: float = DEFAULT_LOG_THETA):
        super().__init__()
        self.raw = nn.Parameter(torch.tensor(math.log(math.expm1(init_log_theta))))  # softplus inverse

    def forward(self) -> torch.Tensor:
        return F.softplus(self.raw)


@torch.no_grad()
def pairwise_accuracy(score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor,
                      tie_margin: float) -> dict[str, float]:
    """Held-out accuracy two ways (ties cannot be scored as a win or a loss). Ties excluded: over pairs labelled A or B, the higher score
    must be the preferred one. Ties included: the prediction is a tie when |r_A - r_B| <= tie_margin,
    else the higher score, and must equal the label over all pairs. NaN when a subset is empty."""
    d, label = score_a - score_b, label.long()
    decided = label != TIE
    direction = torch.where(label == A_BETTER, 1.0, -1.0)
    predicted = torch.where(d.abs() <= tie_margin, TIE, torch.where(d > 0, A_BETTER, B_BETTER))
    return {
        "accuracy_excl_ties": (d * direction > 0)[decided].float().mean().item() if decided.any() else math.nan,
        "accuracy_incl_ties": (predicted == label).float().mean().item() if len(label) else math.nan,
        "num_pairs": len(label), "num_ties": int((~decided).sum()),
    }


@torch.no_grad()
def tie_calibration(score_a: torch.Tensor, score_b: torch.Tensor, label: torch.Tensor,
                    log_theta: float | torch.Tensor = DEFAULT_LOG_THETA, num_bins: int = 5) -> dict:
    """Predicted P(tie) against the observed tie rate, in equal-width bins of the prediction over
    [0, max P(tie)]; `ece` is the count-weighted mean |predicted - observed| (expected calibration error)."""
    p_tie = btt_log_probs(score_a, score_b, log_theta)[..., TIE].exp()
    observed = (label.long() == TIE).float()
    theta = float(torch.as_tensor(log_theta).exp())
    edges = torch.linspace(0, max((theta - 1) / (theta + 1), 1e-12), num_bins + 1)  # up to P(tie | d = 0)
    index = torch.bucketize(p_tie, edges[1:-1])
    bins, ece = [], 0.0
    for b in range(num_bins):
        inside = index == b
        if inside.any():
            predicted, rate, count = p_tie[inside].mean().item(), observed[inside].mean().item(), int(inside.sum())
            bins.append({"low": edges[b].item(), "high": edges[b + 1].item(), "count": count,
                         "predicted": predicted, "observed": rate})
            ece += count * abs(predicted - rate)
    return {"ece": ece / max(len(label), 1), "bins": bins}
