"""Generation from a distill-dmd generator folder (report section 3.5): its few-step sampler, unguided.

The folder is a diffusers SkyReels-V2 checkpoint (its DiT is the generator) with ``dmd.json`` beside it naming
the noise levels it was distilled to sample at (tasks/post/distill_dmd.py); the checkpoint's own scheduler
and guidance would sample it as the 30-step teacher it no longer is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.dmd import SETTINGS_FILE as SETTINGS
from models.generate_config import GenerateConfig, latent_frames


def is_dmd_generator(checkpoint: str) -> bool:
    return (Path(checkpoint) / SETTINGS).is_file()


def check(cfg: GenerateConfig, image=None, end_image=None, video=None) -> None:
    """Refuse what a DMD generator does not do, naming the fix."""
    if image is not None or end_image is not None or video is not None:
        raise ValueError("a distill-dmd generator does text-to-video only: drop --image/--end-image/--video or "
                         "generate from the teacher checkpoint (stage sft-720p)")
    if cfg.is_long_video or cfg.story:
        raise ValueError("a distill-dmd generator makes one window: set num_frames <= base_num_frames, no "
                         "overlap_history or story, or use the teacher checkpoint for long videos")


@torch.no_grad()
def generate(checkpoint: str, cfg: GenerateConfig) -> np.ndarray:
    """(frames, H, W, 3) float32 in [0, 1]: the generator's K steps from seed `cfg.seed`'s noise."""
    from models import dmd
    from models.checkpoint import load_pipeline_components
    from models.df_text import encode_prompts
    from models.df_vae import decode

    check(cfg)
    settings = json.loads((Path(checkpoint) / SETTINGS).read_text())
    parts = load_pipeline_components(checkpoint)
    dit, vae = parts["transformer"].eval(), parts["vae"]
    text = encode_prompts(parts["tokenizer"], parts["text_encoder"], [cfg.prompt], cfg.max_sequence_length)
    stride = vae.config.scale_factor_spatial
    shape = (1, dit.config.in_channels, latent_frames(cfg.num_frames), cfg.height // stride, cfg.width // stride)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(cfg.seed))
    fps = [0 if cfg.fps == 16 else 1] if dit.config.inject_sample_info else None
    return decode(vae, dmd.sample(dit, text.to(dit.dtype), fps, settings["sigmas"], noise))
