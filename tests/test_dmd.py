"""The DMD math (models/dmd.py) on Gaussians, where the denoisers are known in closed form."""

from __future__ import annotations

import torch

from models import dmd

SHAPE = (2, 3, 2, 2, 2)


def gaussian_model(mean: float, std: float = 1.0):
    """A 'DiT' returning the exact velocity for data ~ N(mean, std^2): x_hat = E[x | x_sigma] and
    v = (x_sigma - x_hat) / sigma (since x_sigma = (1 - sigma) x + sigma eps and v = eps - x)."""

    def model(hidden_states, timestep, encoder_hidden_states=None, fps=None, return_dict=False):
        sigma = (timestep / dmd.NUM_TRAIN_TIMESTEPS).view(-1, 1, 1, 1, 1)
        alpha = 1 - sigma
        x_hat = mean + alpha * std**2 / (alpha**2 * std**2 + sigma**2) * (hidden_states - alpha * mean)
        return ((hidden_states - x_hat) / sigma,)

    return model


def test_gradient_on_gaussians_equals_the_hand_computed_value():
    # x = 1, no noise, sigma = 0.5: x_sigma = 0.5. Real N(0, 1): x_hat_real = 0 + 0.5/0.5 (0.5 - 0) = 0.5.
    # Fake N(2, 1): x_hat_fake = 2 + (0.5 - 1) = 1.5. Weight mean|x - x_hat_real| = 0.5: (1.5 - 0.5) / 0.5 = 2.
    x, noise, sigma = torch.ones(SHAPE), torch.zeros(SHAPE), torch.full((2,), 0.5)
    x_sigma = dmd.noised(x, noise, sigma)
    assert torch.allclose(x_sigma, torch.full(SHAPE, 0.5))
    real = dmd.data_prediction(x_sigma, dmd.velocity(gaussian_model(0.0), x_sigma, sigma, None, None), sigma)
    fake = dmd.data_prediction(x_sigma, dmd.velocity(gaussian_model(2.0), x_sigma, sigma, None, None), sigma)
    grad = dmd.dmd_gradient(x, real, fake)
    assert torch.allclose(grad, torch.full(SHAPE, 2.0))
    # The surrogate loss hands exactly that gradient (over the element count) to the generator's output.
    leaf = x.clone().requires_grad_(True)
    dmd.generator_loss(leaf, grad).backward()
    assert torch.allclose(leaf.grad, grad / leaf.numel())


def test_descending_the_gradient_moves_the_generator_to_the_real_mean():
    # A generator x = mu + eps with a fake score that knows its distribution (a converged fake network):
    # DMD steps take mu from 3 to the real mean 0.
    mu, gen = torch.tensor(3.0, requires_grad=True), torch.Generator().manual_seed(0)
    opt = torch.optim.SGD([mu], lr=0.5)
    for _ in range(300):
        x = mu + torch.randn(SHAPE, generator=gen)
        sigma = torch.rand(2, generator=gen) * 0.9 + 0.05
        x_sigma = dmd.noised(x.detach(), torch.randn(SHAPE, generator=gen), sigma)
        real = dmd.data_prediction(x_sigma, gaussian_model(0.0)(x_sigma, sigma * 1000)[0], sigma)
        fake = dmd.data_prediction(x_sigma, gaussian_model(float(mu.detach()))(x_sigma, sigma * 1000)[0], sigma)
        opt.zero_grad()
        dmd.generator_loss(x, dmd.dmd_gradient(x.detach(), real, fake)).backward()
        opt.step()
    assert abs(float(mu.detach())) < 0.2, float(mu.detach())


def test_fake_score_loss_is_zero_at_the_true_velocity_only():
    x, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    assert float(dmd.fake_score_loss(noise - x, x, noise)) == 0.0
    assert float(dmd.fake_score_loss(noise - x + 0.1, x, noise)) > 0.005


def test_multi_step_sampling_predicts_then_renoises():
    sigmas = dmd.generator_sigmas(4, 1.0)
    assert sigmas == [1.0, 0.75, 0.5, 0.25]
    assert dmd.generator_sigmas(4, 8.0)[1] == 8 * 0.75 / (1 + 7 * 0.75)
    # A point mass at 2: every level's data prediction is 2, whatever the noise.
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    out = dmd.sample(gaussian_model(2.0, std=1e-4), None, None, sigmas, noise)
    assert torch.allclose(out, torch.full(SHAPE, 2.0), atol=1e-3)
    # The input at level 1 re-noises level 0's prediction with the noise it implies: for a N(0, 1) model at
    # sigma 1 the prediction is 0 and the implied noise is the input itself, so x_1 = 0.75 noise.
    x1 = dmd.input_at(gaussian_model(0.0), None, None, sigmas, noise, 1)
    assert torch.allclose(x1, 0.75 * noise, atol=1e-6)
    assert torch.equal(dmd.input_at(gaussian_model(0.0), None, None, sigmas, noise, 0), noise)
