"""Flow-DPO (report Eq. 4): a direct numeric evaluation, the policy == reference point, gradient direction,
and the shared-noise interpolation of Eq. 1."""

from __future__ import annotations

import math

import pytest
import torch

from models.flow_dpo import flow_dpo_loss, flow_matching_error, shared_noise_pair


def test_matches_direct_evaluation_of_eq4():
    err_w, err_l = torch.tensor([0.30, 0.50], dtype=torch.float64), torch.tensor([0.45, 0.40], dtype=torch.float64)
    ref_w, ref_l = torch.tensor([0.35, 0.45], dtype=torch.float64), torch.tensor([0.40, 0.42], dtype=torch.float64)
    beta = 500.0
    # pair 0: (0.30 - 0.45) - (0.35 - 0.40) = -0.10 -> argument 25; pair 1: (0.10) - (0.03) = 0.07 -> -17.5
    expected = (-math.log(1 / (1 + math.exp(-25.0))) - math.log(1 / (1 + math.exp(17.5)))) / 2
    loss, metrics = flow_dpo_loss(err_w, err_l, ref_w, ref_l, beta)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert metrics["implicit_reward_margin"] == pytest.approx((25.0 - 17.5) / 2)
    assert metrics["accuracy"] == 0.5
    assert metrics["loss_chosen"] == pytest.approx(0.40) and metrics["loss_rejected"] == pytest.approx(0.425)


def test_policy_equal_to_reference_gives_log2_and_a_symmetric_push():
    err_w = torch.tensor([0.2, 0.7], requires_grad=True)
    err_l = torch.tensor([0.5, 0.1], requires_grad=True)
    beta = 10.0
    loss, metrics = flow_dpo_loss(err_w, err_l, err_w.detach().clone(), err_l.detach().clone(), beta)
    assert loss.item() == pytest.approx(math.log(2))
    assert metrics["implicit_reward_margin"] == 0 and metrics["accuracy"] == 0
    loss.backward()
    # d/dL_w of -log sigmoid(-beta/2 (L_w - L_l)) at margin 0 = beta/4, over a batch of 2
    assert torch.allclose(err_w.grad, torch.full((2,), beta / 4 / 2))
    assert torch.allclose(err_l.grad, -err_w.grad)


def test_gradient_lowers_chosen_error_relative_to_rejected():
    torch.manual_seed(0)
    policy = torch.nn.Linear(8, 8)
    reference = torch.nn.Linear(8, 8)
    reference.load_state_dict(policy.state_dict())
    x_w, x_l, noise = torch.randn(16, 8), torch.randn(16, 8), torch.randn(16, 8)
    t = torch.rand(16)
    noisy_w, noisy_l, v_w, v_l = shared_noise_pair(x_w, x_l, t, noise)
    opt = torch.optim.SGD(policy.parameters(), lr=0.05)
    margins = []
    for _ in range(20):
        with torch.no_grad():
            ref_w, ref_l = flow_matching_error(reference(noisy_w), v_w), flow_matching_error(reference(noisy_l), v_l)
        loss, metrics = flow_dpo_loss(flow_matching_error(policy(noisy_w), v_w),
                                      flow_matching_error(policy(noisy_l), v_l), ref_w, ref_l, beta=5.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        margins.append(metrics["implicit_reward_margin"])
    assert margins[0] == 0 and margins[-1] > 0 and loss.item() < math.log(2)
    # the policy's chosen error fell relative to the rejected one, against the reference
    assert metrics["loss_chosen"] - metrics["loss_rejected"] < metrics["ref_loss_chosen"] - metrics["ref_loss_rejected"]


def test_shared_noise_pair_interpolates_eq1():
    x_w, x_l, noise = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5)
    t = torch.tensor([0.0, 1.0])
    noisy_w, noisy_l, v_w, v_l = shared_noise_pair(x_w, x_l, t, noise)
    assert torch.equal(noisy_w[0], noise[0]) and torch.equal(noisy_l[0], noise[0])  # t = 0: pure noise, shared
    assert torch.equal(noisy_w[1], x_w[1]) and torch.equal(noisy_l[1], x_l[1])  # t = 1: data
    assert torch.equal(v_w, x_w - noise) and torch.equal(v_l, x_l - noise)
    mid = shared_noise_pair(x_w, x_l, torch.full((2,), 0.25), noise)[0]
    assert torch.allclose(mid, 0.25 * x_w + 0.75 * noise)
    with pytest.raises(ValueError):
        shared_noise_pair(x_w, x_l[:1], t, noise)
