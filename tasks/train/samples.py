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
from infra.video import write_video


class Sampler:
    """Holds the frozen components (VAE, umT5, tokenizer, scheduler) of ``checkpoint_dir`` once."""

    def __init__(self, checkpoint_dir: str, cfg: SampleConfig, height: int, width: int):
        from models.checkpoint import load_pipeline_components

        parts = load_pipeline_components(checkpoint_dir)
        parts.pop("transformer")
        self.parts, self.cfg, self.height, self.width = parts, cfg, height, width
        self.diffusion_forcing = False

    def __call__(self, transformer, out_dir: str) -> list[str]:
        from diffusers import SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Pipeline

        was_training = transformer.training
        transformer.eval()
        try:
            if transformer.config.inject_sample_info or self.diffusion_forcing:
                pipe = SkyReelsV2DiffusionForcingPipeline(transformer=transformer, **self.parts)
                extra = {"base_num_frames": self.cfg.frames, "ar_step": 0, "fps": 24}
            else:
                pipe = SkyReelsV2Pipeline(transformer=transformer, **self.parts)
                extra = {}
            pipe.set_progress_bar_config(disable=True)
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

    pipe = DiffusionPipeline.from_pretrained(checkpoint_dir, dtype=torch.float32)
    sampler = Sampler.__new__(Sampler)
    sampler.parts = {k: v for k, v in pipe.components.items() if k != "transformer"}
    sampler.cfg, sampler.height, sampler.width = cfg, height, width
    sampler.diffusion_forcing = type(pipe).__name__.startswith("SkyReelsV2DiffusionForcing")
    return sampler(pipe.transformer, out_dir)


def sample_size(stage: TrainStageConfig, resolutions) -> tuple[int, int]:
    """The stage's 16:9 bucket size (height, width)."""
    return resolutions[stage.resolution].size(16 / 9)
