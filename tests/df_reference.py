"""The diffusers SkyReels-V2 diffusion-forcing pipelines run as references for reelflow's sampler (tests only)."""

from __future__ import annotations

import numpy as np
import torch

from models.generate_config import GenerateConfig


def relative_error(ours, ref) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def make_cfg(**settings) -> GenerateConfig:
    base = dict(prompt="a red car drives through the rain at night", negative_prompt="blurry, static",
                height=32, width=32, num_inference_steps=3, guidance_scale=5.0, max_sequence_length=16, seed=7)
    return GenerateConfig(**{**base, **settings})


def run_reference(pipeline_cls, components, cfg: GenerateConfig, output_type: str = "np", **inputs):
    """One call of a diffusers DF pipeline with `cfg`'s settings; `inputs` are its image/video arguments."""
    pipe = pipeline_cls(**components)
    pipe.set_progress_bar_config(disable=True)
    if cfg.flow_shift is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, flow_shift=cfg.flow_shift)
    torch.manual_seed(cfg.seed + 1)  # the reference re-noises history from the global generator
    try:
        return pipe(
            prompt=cfg.prompt, negative_prompt=cfg.negative_prompt, height=cfg.height, width=cfg.width,
            num_frames=cfg.num_frames, num_inference_steps=cfg.num_inference_steps,
            guidance_scale=cfg.guidance_scale, generator=torch.Generator().manual_seed(cfg.seed),
            max_sequence_length=cfg.max_sequence_length, overlap_history=cfg.overlap_history,
            addnoise_condition=cfg.addnoise_condition, base_num_frames=cfg.base_num_frames, ar_step=cfg.ar_step,
            causal_block_size=cfg.causal_block_size, fps=cfg.fps, output_type=output_type, **inputs,
        ).frames[0]
    finally:
        # The reference writes the block size into the DiT config on every call; undo it for the next case.
        components["transformer"].register_to_config(num_frame_per_block=1)
