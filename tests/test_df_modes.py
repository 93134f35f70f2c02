"""Video extension, start/end-frame control and story mode of reelflow's diffusion-forcing sampler.

Where the reference supports a mode (diffusers' SkyReelsV2DiffusionForcingVideoToVideoPipeline for extension,
its image-to-video sibling with `last_image` for start/end frames) reelflow matches it in fp32 on CPU; story
mode has no reference and is checked against plain text-to-video where the two must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from df_reference import make_cfg, relative_error, run_reference

from models.ad_schedule import plan_windows
from models.checkpoint import init_checkpoint, load_pipeline_components
from models.df_sampler import generate_df
from models.generate_config import latent_frames

torch.set_num_threads(2)
TOLERANCE = 1e-4  # issue 6: with the speed-ups on the target is 1e-3; they meet 1e-4 here
NO_SPEEDUPS = dict(kv_cache=False, skip_unstarted_blocks=False, batch_guidance=False)


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    from diffusers.utils import logging

    logging.set_verbosity_error()
    return load_pipeline_components(init_checkpoint("tiny", str(tmp_path_factory.mktemp("ckpt") / "df")))


def frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


EXTEND_GRID = {
    "sync-1-window-addnoise": dict(num_frames=25, base_num_frames=25, overlap_history=9, addnoise_condition=20),
    # windows of 8 latent frames in blocks of 2: history of 3 latent frames keeps one whole block (2)
    "async-2-windows-kv-cache": dict(num_frames=49, base_num_frames=29, overlap_history=9, ar_step=1,
                                     causal_block_size=2),
    "async-2-windows-addnoise": dict(num_frames=49, base_num_frames=29, overlap_history=9, ar_step=2,
                                     causal_block_size=2, addnoise_condition=20),
    "async-2-windows-no-speedups": dict(num_frames=49, base_num_frames=29, overlap_history=9, ar_step=1,
                                        causal_block_size=2, **NO_SPEEDUPS),
}


@pytest.mark.parametrize("name", list(EXTEND_GRID))
def test_video_extension_matches_reference(components, name):
    from diffusers import SkyReelsV2DiffusionForcingVideoToVideoPipeline as V2V
    from PIL import Image

    cfg = make_cfg(**EXTEND_GRID[name])
    video = frames(21)
    ours = generate_df(components, cfg, video=video)
    pil = [Image.fromarray(f) for f in video]
    ref_latents = run_reference(V2V, components, cfg, output_type="latent", video=pil)
    ref_frames = run_reference(V2V, components, cfg, video=pil)
    # Output = the given video, then the new frames; num_frames counts the re-read overlap once.
    assert ours.frames.shape == (len(video) + cfg.num_frames - cfg.overlap_history, 32, 32, 3)
    np.testing.assert_array_equal(ours.frames[:len(video)], video / np.float32(255))
    assert relative_error(ours.latents[0], ref_latents) <= TOLERANCE
    # The reference appends the whole decoded sequence, re-decoded overlap included, to the input video.
    assert relative_error(ours.frames[len(video):], ref_frames[len(video) + cfg.overlap_history:]) <= TOLERANCE


START_END_GRID = {
    "sync": dict(num_frames=17, base_num_frames=17, addnoise_condition=20),
    "async-full-attention": dict(num_frames=21, base_num_frames=21, ar_step=2, causal_block_size=1),
    "async-no-speedups": dict(num_frames=21, base_num_frames=21, ar_step=2, causal_block_size=1, **NO_SPEEDUPS),
}


@pytest.mark.parametrize("name", list(START_END_GRID))
def test_start_end_frames_match_reference(components, name):
    # The reference's start/end control is well-defined for one window (its long-video variant drops the
    # overlap instead of the end frame) and block size 1 (larger blocks would denoise the start frame).
    from diffusers import SkyReelsV2DiffusionForcingImageToVideoPipeline as I2V
    from PIL import Image

    cfg = make_cfg(**START_END_GRID[name])
    start, end = frames(2, seed=1)
    ours = generate_df(components, cfg, image=start, end_image=end)
    inputs = dict(image=Image.fromarray(start), last_image=Image.fromarray(end))
    ref_latents = run_reference(I2V, components, cfg, output_type="latent", **inputs)
    ref_frames = run_reference(I2V, components, cfg, **inputs)
    assert ours.frames.shape == ref_frames.shape == (cfg.num_frames, 32, 32, 3)
    assert relative_error(ours.latents[0], ref_latents[:, :-1]) <= TOLERANCE  # the end latent is not output
    assert relative_error(ours.frames, ref_frames) <= TOLERANCE
    without_end = generate_df(components, cfg, image=start).frames
    assert relative_error(without_end, ref_frames) > 100 * relative_error(ours.frames, ref_frames)


def test_end_frame_alone_steers_a_long_video(components):
    cfg = make_cfg(num_frames=41, base_num_frames=21, overlap_history=5, ar_step=1, causal_block_size=1)
    end = frames(1, seed=2)[0]
    plain, steered = generate_df(components, cfg), generate_df(components, cfg, end_image=end)
    assert steered.frames.shape == plain.frames.shape == (41, 32, 32, 3)
    first = latent_frames(cfg.base_num_frames)  # the end frame joins the last window only
    torch.testing.assert_close(steered.latents[:, :, :first], plain.latents[:, :, :first], rtol=0, atol=0)
    assert relative_error(steered.latents[:, :, first:], plain.latents[:, :, first:]) > 1e-5


STORY = dict(num_frames=41, base_num_frames=21, overlap_history=5, ar_step=1, causal_block_size=2)


def test_story_of_one_repeated_prompt_is_text_to_video(components):
    cfg = make_cfg(**STORY)
    story = make_cfg(**STORY, prompt="", story=[cfg.prompt] * 3)
    np.testing.assert_array_equal(generate_df(components, story).frames, generate_df(components, cfg).frames)


def test_story_prompts_change_their_own_windows_only(components):
    first, second = "a red car drives through the rain at night", "a dog runs on the beach at sunset"
    story = generate_df(components, make_cfg(**STORY, prompt="", story=[first, second]))
    plain = generate_df(components, make_cfg(**STORY, prompt=first))
    base = latent_frames(STORY["base_num_frames"])
    windows = plan_windows(latent_frames(STORY["num_frames"]), base, latent_frames(STORY["overlap_history"]), 2)
    assert len(windows) == 3  # the last prompt holds for the third window
    torch.testing.assert_close(story.latents[:, :, :base], plain.latents[:, :, :base], rtol=0, atol=0)
    assert relative_error(story.latents[:, :, base:], plain.latents[:, :, base:]) > 1e-3


def test_story_longer_than_the_video_names_the_frame_count():
    cfg = make_cfg(**STORY, prompt="", story=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="raise num_frames to at least") as err:
        cfg.window_prompts(3)
    needed = int(str(err.value).split("at least ")[1].split()[0])
    counts = [len(plan_windows(latent_frames(n), 6, 2, 2)) for n in (needed - 4, needed)]
    assert counts == [3, 4]


def test_mode_errors_name_the_fix(components):
    with pytest.raises(ValueError, match="end-frame control needs causal_block_size 1"):
        generate_df(components, make_cfg(num_frames=17, base_num_frames=17, causal_block_size=2),
                    end_image=frames(1)[0])
    with pytest.raises(ValueError, match="either image .* or video"):
        generate_df(components, make_cfg(num_frames=25, overlap_history=9), image=frames(1)[0], video=frames(21))
    with pytest.raises(ValueError, match="must be at least that long"):
        generate_df(components, make_cfg(num_frames=25, overlap_history=9), video=frames(5))
    with pytest.raises(ValueError, match="video extension needs overlap_history"):
        generate_df(components, make_cfg(num_frames=25), video=frames(21))
    with pytest.raises(ValueError, match="use overlap_history >= 17"):
        make_cfg(num_frames=97, base_num_frames=57, overlap_history=13, causal_block_size=5)
    with pytest.raises(ValueError, match="use 17 or 21, not 18"):
        make_cfg(num_frames=97, base_num_frames=57, overlap_history=18)
