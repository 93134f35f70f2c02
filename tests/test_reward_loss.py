"""BTT loss (Rao-Kupper, report section 3.4.1): hand evaluation, the plain-BT limit, gradient direction,
and the held-out accuracy and tie-calibration measures."""

from __future__ import annotations

import math

import pytest
import torch

from models.reward_loss import (
    A_BETTER,
    B_BETTER,
    TIE,
    TieParameter,
    btt_log_probs,
    btt_loss,
    pairwise_accuracy,
    tie_calibration,
)


def rao_kupper(r_a: float, r_b: float, theta: float) -> tuple[float, float, float]:
    pa, pb = math.exp(r_a), math.exp(r_b)
    win_a, win_b = pa / (pa + theta * pb), pb / (pb + theta * pa)
    tie = (theta**2 - 1) * pa * pb / ((pa + theta * pb) * (pb + theta * pa))
    return win_a, win_b, tie


def test_loss_matches_hand_evaluation():
    r_a, r_b, theta = [0.7, -0.2, 1.5], [0.1, 0.4, 1.5], 1.8
    labels = [A_BETTER, B_BETTER, TIE]
    expected = -sum(math.log(rao_kupper(a, b, theta)[y]) for a, b, y in zip(r_a, r_b, labels, strict=True)) / 3
    loss = btt_loss(torch.tensor(r_a, dtype=torch.float64), torch.tensor(r_b, dtype=torch.float64),
                    torch.tensor(labels), math.log(theta))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    probs = btt_log_probs(torch.tensor(r_a, dtype=torch.float64), torch.tensor(r_b, dtype=torch.float64),
                          math.log(theta)).exp()
    assert torch.allclose(probs.sum(-1), torch.ones(3, dtype=torch.float64))


def test_reduces_to_bradley_terry_as_theta_goes_to_one():
    a, b = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    label = torch.randint(0, 2, (50,))  # no ties
    plain_bt = torch.nn.functional.binary_cross_entropy_with_logits(a - b, (label == A_BETTER).double())
    assert btt_loss(a, b, label, 0.0).item() == pytest.approx(plain_bt.item(), rel=1e-12)
    assert btt_loss(a, b, label, 1e-9).item() == pytest.approx(plain_bt.item(), rel=1e-6)
    assert btt_log_probs(a, b, 0.0)[:, TIE].exp().max() == 0  # theta = 1: ties impossible
    with pytest.raises(ValueError):
        btt_log_probs(a, b, -0.1)


def test_gradient_direction():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    for label, sign in ((A_BETTER, -1), (B_BETTER, 1)):  # descent raises the preferred score
        a.grad = b.grad = None
        btt_loss(a, b, torch.full((3,), label)).backward()
        assert (torch.sign(a.grad) == sign).all() and (torch.sign(b.grad) == -sign).all()
    # a tie pulls the two scores together
    a2, b2 = torch.tensor([2.0], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    btt_loss(a2, b2, torch.tensor([TIE])).backward()
    assert a2.grad.item() > 0 and b2.grad.item() < 0


def test_learnable_tie_parameter_fits_the_tie_rate():
    tie = TieParameter(init_log_theta=0.1)
    assert tie().item() == pytest.approx(0.1, rel=1e-5)
    label = torch.tensor([TIE] * 50 + [A_BETTER] * 25 + [B_BETTER] * 25)  # equal scores, half ties
    zeros = torch.zeros(100)
    opt = torch.optim.Adam(tie.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        btt_loss(zeros, zeros, label, tie()).backward()
        opt.step()
    theta = tie().exp().item()
    assert (theta - 1) / (theta + 1) == pytest.approx(0.5, abs=0.01)  # P(tie | d = 0) = observed rate


def test_pairwise_accuracy_with_and_without_ties():
    a = torch.tensor([1.0, 0.0, 0.05, 2.0, 0.0])
    b = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    label = torch.tensor([A_BETTER, B_BETTER, TIE, B_BETTER, A_BETTER])
    acc = pairwise_accuracy(a, b, label, tie_margin=0.1)
    assert acc["accuracy_excl_ties"] == pytest.approx(2 / 4)  # last pair: d = 0 is not a correct preference
    assert acc["accuracy_incl_ties"] == pytest.approx(3 / 5)  # the tie (|d| <= 0.1) is right, the last is not
    assert acc["num_ties"] == 1 and acc["num_pairs"] == 5


def test_tie_calibration_is_small_for_labels_drawn_from_the_model():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(20_000, generator=gen), torch.randn(20_000, generator=gen)
    probs = btt_log_probs(a, b).exp()
    label = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    calibrated = tie_calibration(a, b, label)
    assert calibrated["ece"] < 0.02 and sum(x["count"] for x in calibrated["bins"]) == 20_000
    assert tie_calibration(a, b, torch.full_like(label, TIE))["ece"] > 0.5  # all ties: badly calibrated
