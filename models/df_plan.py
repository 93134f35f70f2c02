"""What one diffusion-forcing generation is conditioned on: its windows, prompts and encoded frames.

The modes of report section 5.5 (text-to-video, image-to-video, start/end frames, video extension, story)
differ only in what the first and last windows are conditioned on; their inputs are checked here, against
the settings, before anything is generated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from models.ad_schedule import Window, plan_windows
from models.df_vae import encode_frames
from models.generate_config import VAE_TEMPORAL_STRIDE, GenerateConfig, latent_frames


def _encode_image(vae, image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 or [0, 1] float frame -> (1, C, 1, h, w) normalized latent (VAE mode)."""
    return encode_frames(vae, np.asarray(image)[None])


@dataclass
class Plan:
    """What one generation is conditioned on, in latents, and how its decoded frames become the output."""

    windows: list[Window]
    prompts: list[str]  # one per window (story mode) or the same throughout
    history: torch.Tensor | None  # clean latents of window 0's prefix: the first frame, or the video's tail
    end: torch.Tensor | None  # clean latent appended to the last window (end-frame control)
    lead: np.ndarray | None  # frames output before the generated ones (the video being continued)
    skip: int  # decoded frames dropped: the re-decoded tail of that video


def make_plan(cfg: GenerateConfig, transformer, vae, image, end_image, video) -> Plan:
    """Check the mode's inputs against `cfg` and encode its conditions (see `DFSampler.stream`)."""
    block = cfg.causal_block_size or transformer.config.num_frame_per_block
    frame_shape = (cfg.height, cfg.width, 3)
    for name, frame in (("image", image), ("end_image", end_image)):
        if frame is not None and np.asarray(frame).shape != frame_shape:
            raise ValueError(f"{name} must be {frame_shape} to match height and width; got "
                             f"{np.asarray(frame).shape}: resize it first")
    if image is not None and video is not None:
        raise ValueError("give either image (first frame) or video (to extend), not both")
    if end_image is not None and block > 1:
        raise ValueError("end-frame control needs causal_block_size 1: under block-causal attention no "
                         "earlier frame can see a frame placed after them")
    total = latent_frames(cfg.num_frames)
    overlap = latent_frames(cfg.overlap_history) if cfg.overlap_history else 0
    if cfg.is_long_video:
        windows = plan_windows(total, latent_frames(cfg.base_num_frames), overlap, block)
    else:
        windows = [Window(0, total, 0, 0)]
    prompts = cfg.window_prompts(len(windows))
    history = lead = None
    skip = 0
    if image is not None:
        history = _encode_image(vae, image)
    if video is not None:
        video = np.asarray(video)
        if cfg.overlap_history is None:
            raise ValueError("video extension needs overlap_history: the frames re-read from the video "
                             "(17 or 37 recommended)")
        if video.ndim != 4 or video.shape[1:] != frame_shape:
            raise ValueError(f"video must be (frames, {cfg.height}, {cfg.width}, 3) to match height and "
                             f"width; got {video.shape}: resize it first")
        if len(video) < cfg.overlap_history or cfg.num_frames <= cfg.overlap_history:
            raise ValueError(f"video extension re-reads overlap_history={cfg.overlap_history} frames: the "
                             f"video ({len(video)} frames) must be at least that long and num_frames "
                             f"({cfg.num_frames}) longer")
        history = encode_frames(vae, video[-cfg.overlap_history:])
        if history.shape[2] < block:
            raise ValueError(f"overlap_history={cfg.overlap_history} gives {history.shape[2]} latent frames, "
                             f"fewer than causal_block_size={block}: raise overlap_history")
        lead = video.astype(np.float32) / 255.0 if video.dtype == np.uint8 else video.astype(np.float32)
        skip = 1 + VAE_TEMPORAL_STRIDE * (history.shape[2] - 1)  # the tail, decoded again
    if history is not None:
        # The reference keeps whole causal blocks of history only (one frame for an image, block 1).
        prefix = history.shape[2] if image is not None else history.shape[2] - history.shape[2] % block
        windows[0] = replace(windows[0], num_clean_prefix=prefix)
    end = _encode_image(vae, end_image) if end_image is not None else None
    if end is not None and windows[-1].num_frames <= windows[-1].num_clean_prefix:
        raise ValueError("the last window has no frame to generate before the end frame: raise num_frames")
    return Plan(windows, prompts, history, end, lead, skip)
