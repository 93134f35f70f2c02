"""reelflow's diffusion-forcing sampler reproduces diffusers' SkyReelsV2DiffusionForcingPipeline (fp32, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from df_reference import make_cfg, relative_error, run_reference

from models.checkpoint import init_checkpoint, load_pipeline_components
from models.df_sampler import generate_df
from models.generate_config import GenerateConfig

torch.set_num_threads(2)
TOLERANCE = 1e-4  # issue 6: relative error on decoded frames (its 1e-3 with speed-ups on is met at 1e-4)


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    from diffusers.utils import logging

    logging.set_verbosity_error()  # the reference warns about every block-size truncation
    return load_pipeline_components(init_checkpoint("tiny", str(tmp_path_factory.mktemp("ckpt") / "df")))


def reference(components, cfg: GenerateConfig, output_type: str = "np"):
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    return run_reference(SkyReelsV2DiffusionForcingPipeline, components, cfg, output_type)


GRID = {
    "sync-1-window": dict(num_frames=17, base_num_frames=17),
    "sync-shift5-fps16-noguidance": dict(num_frames=13, base_num_frames=13, flow_shift=5.0, fps=16,
                                         guidance_scale=1.0),
    "async-1-window-full-attention": dict(num_frames=17, base_num_frames=17, ar_step=2, causal_block_size=1),
    "async-1-window-causal-blocks": dict(num_frames=25, base_num_frames=25, ar_step=1, causal_block_size=7),
    "async-1-window-causal-blocks-no-speedups": dict(num_frames=25, base_num_frames=25, ar_step=1,
                                                     causal_block_size=7, skip_unstarted_blocks=False,
                                                     kv_cache=False),
    "sync-3-windows-addnoise": dict(num_frames=41, base_num_frames=21, overlap_history=5, addnoise_condition=20),
    "async-3-windows-causal-blocks": dict(num_frames=69, base_num_frames=29, overlap_history=9, ar_step=2,
                                          causal_block_size=2, addnoise_condition=20),
    "async-3-windows-kv-cache-history": dict(num_frames=69, base_num_frames=29, overlap_history=9, ar_step=1,
                                             causal_block_size=2, num_inference_steps=4),
}


@pytest.mark.parametrize("name", list(GRID))
def test_matches_reference(components, name):
    cfg = make_cfg(**GRID[name])
    ours = generate_df(components, cfg).frames
    ref = reference(components, cfg)
    assert ours.shape == ref.shape == (cfg.num_frames, cfg.height, cfg.width, 3)
    assert relative_error(ours, ref) <= TOLERANCE


def test_tail_frames_are_served_where_the_reference_leaves_noise(components):
    # 2 windows of 9 + 7 latent frames, blocks of 3, 3 of the 4 overlap frames kept as history: the reference
    # denoises only 2 whole blocks of the last window (diffusers issue 13609) and decodes its 7th frame as raw
    # noise. Every frame before it must match.
    cfg = make_cfg(num_frames=45, base_num_frames=33, overlap_history=13, ar_step=1, causal_block_size=3)
    ours = generate_df(components, cfg)
    ref_latents = reference(components, cfg, output_type="latent")[None]
    ref_frames = reference(components, cfg)
    assert ours.latents.shape == ref_latents.shape == (1, 16, 12, 4, 4)
    assert relative_error(ours.latents[:, :, :-1], ref_latents[:, :, :-1]) <= TOLERANCE
    # The Wan VAE decodes causally in time: pixel frames of the first 11 latent frames are 1 + 4 * 10.
    assert relative_error(ours.frames[:41], ref_frames[:41]) <= TOLERANCE
    assert relative_error(ours.latents[:, :, -1:], ref_latents[:, :, -1:]) > 0.1


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="use 93 or 97"):
        make_cfg(num_frames=95)
    with pytest.raises(ValueError, match="height must be a multiple of 16"):
        make_cfg(height=40)
    with pytest.raises(ValueError, match="overlap_history is required"):
        make_cfg(num_frames=41, base_num_frames=21)


def reference_i2v(components, cfg: GenerateConfig, image: np.ndarray):
    from diffusers import SkyReelsV2DiffusionForcingImageToVideoPipeline
    from PIL import Image

    return run_reference(SkyReelsV2DiffusionForcingImageToVideoPipeline, components, cfg,
                         image=Image.fromarray(image))


# First-frame conditioning: the reference keeps the image only when it fills whole causal blocks (block
# size 1); with larger blocks it denoises the image frame too, which reelflow deliberately does not.
I2V_GRID = {
    "i2v-sync-1-window": dict(num_frames=17, base_num_frames=17, addnoise_condition=20),
    # Whole windows only: the reference I2V pipeline indexes past a shorter last window (IndexError).
    "i2v-async-2-windows": dict(num_frames=37, base_num_frames=21, overlap_history=5, ar_step=1,
                                causal_block_size=1, addnoise_condition=20),
}


@pytest.mark.parametrize("name", list(I2V_GRID))
def test_image_to_video_matches_reference(components, name):
    cfg = make_cfg(**I2V_GRID[name])
    image = np.random.default_rng(0).integers(0, 256, (cfg.height, cfg.width, 3), dtype=np.uint8)
    ours = generate_df(components, cfg, image=image).frames
    ref = reference_i2v(components, cfg, image)
    assert ours.shape == ref.shape
    assert relative_error(ours, ref) <= TOLERANCE
