"""Full-sequence text/image-to-video for checkpoints that are not diffusion-forcing (SkyReels-V2-T2V/I2V).

Every frame shares one noise level, so there is no schedule to plan: the checkpoint's own diffusers pipeline
(`SkyReelsV2Pipeline`, or `SkyReelsV2ImageToVideoPipeline` with its CLIP image encoder) is the sampler, run
with the settings of a `GenerateConfig`. Diffusion-forcing settings have no meaning here and are refused.
"""

from __future__ import annotations

import numpy as np
import torch

from models.generate_config import GenerateConfig

FULL_SEQUENCE_PIPELINES = {"SkyReelsV2Pipeline": False, "SkyReelsV2ImageToVideoPipeline": True}  # -> needs image


def check_full_sequence(cfg: GenerateConfig, pipeline_name: str, image=None, end_image=None, video=None,
                        checkpoint: str = "the checkpoint") -> None:
    """Raise a ValueError naming the fix when `cfg` asks a full-sequence checkpoint for a DF mode."""
    if pipeline_name not in FULL_SEQUENCE_PIPELINES:
        raise ValueError(f"{checkpoint} holds a {pipeline_name}; expected one of "
                         f"{sorted(FULL_SEQUENCE_PIPELINES)} or a diffusion-forcing pipeline")
    df_modes = [name for name, used in (
        ("long video (num_frames > base_num_frames)", cfg.is_long_video), ("asynchronous ar_step", cfg.ar_step > 0),
        ("causal_block_size > 1", (cfg.causal_block_size or 1) > 1), ("end_image", end_image is not None),
        ("video extension", video is not None), ("story prompts", len(cfg.story) > 1),
        ("addnoise_condition", cfg.addnoise_condition > 0)) if used]
    if df_modes:
        raise ValueError(f"{checkpoint} is a full-sequence {pipeline_name}, not diffusion forcing, so it cannot "
                         f"do: {', '.join(df_modes)}. Use a diffusion-forcing checkpoint (SkyReels-V2-DF-*, or "
                         "`reelflow init-checkpoint --profile tiny --out DIR`), or drop those settings")
    if FULL_SEQUENCE_PIPELINES[pipeline_name] and cfg.max_sequence_length != 512:
        # diffusers' I2V attention takes the last 512 context tokens as the text (models/i2v.py)
        raise ValueError(f"{checkpoint} is an image-to-video model, whose text context is 512 tokens long; "
                         f"drop max_sequence_length={cfg.max_sequence_length} (use 512)")
    if FULL_SEQUENCE_PIPELINES[pipeline_name] != (image is not None):
        need = "needs an image (--image)" if FULL_SEQUENCE_PIPELINES[pipeline_name] else "takes no image"
        raise ValueError(f"{checkpoint} is a full-sequence {pipeline_name}, which {need}; for first-frame "
                         "conditioning of a text-to-video model use a diffusion-forcing checkpoint")


@torch.no_grad()
def generate_full_sequence(path: str, pipeline_name: str, cfg: GenerateConfig, image: np.ndarray | None = None,
                           dtype: torch.dtype = torch.float32) -> np.ndarray:
    """(num_frames, height, width, 3) float32 frames in [0, 1] from a full-sequence checkpoint folder."""
    import diffusers
    from PIL import Image

    check_full_sequence(cfg, pipeline_name, image, checkpoint=path)
    pipe = getattr(diffusers, pipeline_name).from_pretrained(path, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    if cfg.flow_shift is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, flow_shift=cfg.flow_shift)
    extra = {} if image is None else {"image": Image.fromarray(np.asarray(image))}
    frames = pipe(prompt=cfg.prompt or cfg.story[0], negative_prompt=cfg.negative_prompt, height=cfg.height,
                  width=cfg.width, num_frames=cfg.num_frames, num_inference_steps=cfg.num_inference_steps,
                  guidance_scale=cfg.guidance_scale, generator=torch.Generator().manual_seed(cfg.seed),
                  max_sequence_length=cfg.max_sequence_length, output_type="np", **extra).frames[0]
    return np.asarray(frames, dtype=np.float32)
