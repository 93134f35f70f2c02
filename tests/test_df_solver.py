"""Exact shortcuts of the sampler's edges: the UniPC solver with precomputed scalars (models/df_solver.py) is
bitwise diffusers' scheduler step, and the streaming decoder's multi-frame calls (models/df_vae.py) equal
diffusers' frame-by-frame `vae.decode`."""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import pytest
import torch

from models import df_vae
from models.checkpoint import init_checkpoint, load_pipeline_components
from models.df_solver import UniPCCoefficients, make_solvers, supports

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    return load_pipeline_components(init_checkpoint("tiny", str(tmp_path_factory.mktemp("ckpt") / "df")))


def _scheduler(components, steps: int, **overrides):
    base = components["scheduler"]
    scheduler = type(base).from_config(base.config, **overrides) if overrides else deepcopy(base)
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.mark.parametrize("steps,overrides", [(30, {}), (4, {}), (10, {"solver_order": 3, "flow_shift": 5.0}),
                                             (6, {"disable_corrector": [2], "lower_order_final": False})])
def test_unipc_solver_is_bitwise_the_diffusers_step(components, steps, overrides):
    scheduler = _scheduler(components, steps, **overrides)
    assert supports(scheduler)
    reference = deepcopy(scheduler)
    ours = make_solvers(scheduler, 1, steps, "cpu")[0]
    gen = torch.Generator().manual_seed(0)
    x_ref = x_ours = torch.randn(1, 16, 3, 4, 4, generator=gen)
    for k, t in enumerate(scheduler.timesteps):
        velocity = torch.randn(x_ref.shape, generator=gen) * (1 + k)  # a different model output each step
        x_ref = reference.step(velocity, t, x_ref, return_dict=False)[0]
        x_ours = ours.step(velocity, t, x_ours)
        assert torch.equal(x_ours, x_ref), f"step {k}: {float((x_ours - x_ref).abs().max())}"
    assert not torch.equal(x_ours, torch.zeros_like(x_ours))


def test_solver_states_share_scalars_and_others_fall_back(components):
    scheduler = _scheduler(components, 5)
    coefficients = UniPCCoefficients(scheduler)
    solvers = make_solvers(scheduler, 3, 5, "cpu", coefficients=coefficients)
    assert all(s.c is coefficients for s in solvers) and len({id(s) for s in solvers}) == 3
    from diffusers import FlowMatchEulerDiscreteScheduler

    other = FlowMatchEulerDiscreteScheduler()
    assert not supports(other) and not supports(_scheduler(components, 5, solver_type="bh1"))
    fallback = make_solvers(other, 2, 5, "cpu")
    assert all(type(s).__name__ == "_DiffusersSolver" for s in fallback)


@pytest.mark.parametrize("budget_frames", [1, 3, 100])
def test_multi_frame_decoding_equals_the_diffusers_decode(components, budget_frames, monkeypatch):
    vae = components["vae"]
    latents = torch.randn(1, vae.config.z_dim, 11, 4, 4, generator=torch.Generator().manual_seed(1))
    # latent frames per decoder call: the budget in output pixels of one 4-frame, 32x32 latent frame
    monkeypatch.setattr(df_vae, "DECODE_PIXELS", budget_frames * 4 * 32 * 32)
    decoder = df_vae.StreamingDecoder(vae)
    ours = np.concatenate([decoder(latents[:, :, :5]), decoder(latents[:, :, 5:6]), decoder(latents[:, :, 6:])])
    mean, std = df_vae._stats(vae, latents.device)
    with torch.no_grad():
        ref = vae.decode(latents * std + mean).sample
    ref = df_vae.to_frames(ref)
    assert ours.shape == ref.shape == (41, 32, 32, 3)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5)
    assert float(np.abs(ref - 0.5).max()) > 0.01  # the decode is not trivially constant
