"""Sample videos during training: fixed prompts and seed, so runs and steps compare by eye.

Generation goes through diffusers' own SkyReels-V2 pipelines (DF pipeline for DiTs with the FPS
embedding, the full-sequence one without), which doubles as a check that what the trainer holds is
a model those pipelines serve. Videos are H.264 mp4s logged under ``samples/step-N/`` in MLflow.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from infra.config_train import SampleConfig, TrainStageConfig
from infra.runtime import verbose
from infra.video import write_video


def frozen_parts(checkpoint_dir: str) -> dict:
    """A checkpoint's components training leaves alone (VAE, umT5, tokenizer, scheduler), loaded once."""
    from models.checkpoint import load_pipeline_components

    parts = load_pipeline_components(checkpoint_dir)
    parts.pop("transformer")
    return parts


def reference_pipeline(transformer, parts: dict, diffusion_forcing: bool, frames: int, fps: int = 24):
    """(pipeline, extra call kwargs): diffusers' DF pipeline for a DiT with the FPS embedding or a
    diffusion-forcing checkpoint (synchronous, one window), the full-sequence one otherwise."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Pipeline

    if transformer.config.inject_sample_info or diffusion_forcing:
        pipe = SkyReelsV2DiffusionForcingPipeline(transformer=transformer, **parts)
        extra = {"base_num_frames": frames, "ar_step": 0, "fps": fps}
    else:
        pipe, extra = SkyReelsV2Pipeline(transformer=transformer, **parts), {}
    pipe.set_progress_bar_config(disable=True)
    return pipe, extra


class Sampler:
    """Videos at the fixed prompts and seed of ``cfg`` from a DiT and the frozen ``parts`` around it."""

    def __init__(self, parts: dict, cfg: SampleConfig, height: int, width: int, diffusion_forcing: bool = False):
        self.parts, self.cfg, self.height, self.width = parts, cfg, height, width
        self.diffusion_forcing = diffusion_forcing

    def __call__(self, transformer, out_dir: str) -> list[str]:
        was_training = transformer.training
        transformer.eval()
        try:
            pipe, extra = reference_pipeline(transformer, self.parts, self.diffusion_forcing, self.cfg.frames)
            os.makedirs(out_dir, exist_ok=True)
            paths = []
            for i, prompt in enumerate(self.cfg.prompts):
                with torch.no_grad():
                    video = pipe(prompt, height=self.height, width=self.width, num_frames=self.cfg.frames,
                                 num_inference_steps=self.cfg.steps, guidance_scale=self.cfg.guidance_scale,
                                 generator=torch.Generator().manual_seed(self.cfg.seed), output_type="np",
                                 **extra).frames[0]
                path = os.path.join(out_dir, f"prompt{i}.mp4")
                write_video((np.clip(video, 0, 1) * 255).round().astype(np.uint8), path, fps=24)
                paths.append(path)
            return paths
        finally:
            transformer.train(was_training)


def sample_checkpoint(checkpoint_dir: str, cfg: SampleConfig, height: int, width: int, out_dir: str) -> list[str]:
    """Samples from a published folder loaded by diffusers itself (``DiffusionPipeline.from_pretrained``):
    every checkpoint the trainer writes must load in the reference pipelines unchanged."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    if not verbose():  # diffusers' "Loading pipeline components" bar has no environment switch
        diffusers_logging.disable_progress_bar()
    pipe = DiffusionPipeline.from_pretrained(checkpoint_dir, dtype=torch.float32)
    parts = {k: v for k, v in pipe.components.items() if k != "transformer"}
    forcing = type(pipe).__name__.startswith("SkyReelsV2DiffusionForcing")
    return Sampler(parts, cfg, height, width, forcing)(pipe.transformer, out_dir)


def sample_size(stage: TrainStageConfig, resolutions) -> tuple[int, int]:
    """The stage's 16:9 bucket size (height, width)."""
    return resolutions[stage.resolution].size(16 / 9)
