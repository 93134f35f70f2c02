"""The row-pruned DiT pass (models/df_dit.py) against the diffusers forward, and the DiT FLOP account."""

from __future__ import annotations

import pytest
import torch
from df_reference import make_cfg, relative_error, run_reference

from models import df_dit
from models.checkpoint import init_checkpoint, load_pipeline_components
from models.df_attention import FrameLayout
from models.df_flops import count_dit_flops
from models.df_sampler import DFSampler

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    from diffusers.utils import logging

    logging.set_verbosity_error()
    return load_pipeline_components(init_checkpoint("tiny", str(tmp_path_factory.mktemp("ckpt") / "df")))


@pytest.mark.parametrize("out_frames", [(0, 6), (2, 6), (4, 6)])
@torch.no_grad()
def test_pass_matches_the_diffusers_forward_on_the_frames_it_returns(components, out_frames):
    # 6 latent frames in causal blocks of 2 with per-frame timesteps (a mid-schedule row), guided (batch of
    # two prompts): the diffusers forward with its dense block-causal mask is the reference.
    dit = components["transformer"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 6, 4, 4, generator=gen)
    t = torch.tensor([[0.0, 0.0, 20.0, 20.0, 700.0, 700.0]])
    text = torch.randn(2, 16, dit.config.text_dim, generator=gen)
    dit.register_to_config(num_frame_per_block=2)
    try:
        ref = dit(hidden_states=x.expand(2, -1, -1, -1, -1), timestep=t.expand(2, -1), encoder_hidden_states=text,
                  enable_diffusion_forcing=True, fps=[1], return_dict=False)[0]
    finally:
        dit.register_to_config(num_frame_per_block=1)
    layout = FrameLayout(tokens_per_frame=4, block_ends=[2, 4, 6])
    ours = df_dit.velocity(dit, x, t, df_dit.text_state(dit, text), 1, layout, out_frames)
    lo, hi = out_frames
    assert ours.shape == (2, 16, hi - lo, 4, 4)
    assert relative_error(ours, ref[:, :, lo:hi]) < 1e-6


def test_flop_account_counts_cpu_attention_and_halves_the_reference(components):
    # Upstream's long-video shape, scaled down: async causal blocks, re-noised history, 2 windows.
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    cfg = make_cfg(num_frames=49, base_num_frames=29, overlap_history=9, ar_step=1, causal_block_size=2,
                   addnoise_condition=20, num_inference_steps=2)
    dit = components["transformer"]
    with count_dit_flops(dit) as ref:
        ref_frames = run_reference(SkyReelsV2DiffusionForcingPipeline, components, cfg)
    with count_dit_flops(dit) as ours:
        frames = DFSampler(components).generate(cfg).frames
    assert "forward" not in dit.__dict__ and df_dit.velocity.__name__ == "velocity"  # unwrapped again
    assert relative_error(frames, ref_frames) < 1e-5
    attention = "aten._scaled_dot_product_flash_attention_for_cpu"
    assert ref.by_op[attention] > 0 and ours.by_op[attention] > 0
    assert ref.total == sum(ref.by_op.values()) and ref.calls == 2 * ours.calls  # cond + uncond vs one batch
    print("DiT FLOPs reelflow / diffusers:", ours.total / ref.total)
    assert ours.total <= 0.5 * ref.total, ours.total / ref.total
