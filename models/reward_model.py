"""The motion-quality reward model of report section 3.4.1: a Qwen2.5-VL backbone with a scalar head.

The report trains it from Qwen2.5-VL-7B-Instruct on ~30k pairs with the Bradley-Terry-with-ties loss
(`models.reward_loss`), WITHOUT the prompt: motion quality is context-agnostic, so the model sees only the
video, wrapped in a fixed template with no instruction text. The score is a linear head on the backbone's
last hidden state, pooled over the sequence: ``mean`` (every position of the template plus the video tokens)
or ``mean_max`` (the mean and the per-feature max over the video tokens only, concatenated: a defect in
a few patches of a few frames is not averaged away).

Locally the backbone is the tiny random Qwen2.5-VL of `models.captioner.build_tiny_captioner` (same
classes, same `from_pretrained` path as production); frames are patchified by `captioner.video_inputs`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from models.captioner import build_tiny_captioner, video_inputs

TEMPLATE = "<|im_start|>user\n<|vision_start|>{video}<|vision_end|><|im_end|>\n"  # no instruction: video only
CONFIG_FILE, HEAD_FILE, BACKBONE_DIR = "reward_model.json", "reward_head.pt", "backbone"
POOLINGS = ("mean", "mean_max")


@dataclass(frozen=True)
class RewardModelConfig:
    min_pixels: int = 28 * 28 * 4  # per frame, after Qwen2-VL resizing (sides multiples of 28)
    max_pixels: int = 112 * 112  # the tiny profile's budget; production sets e.g. 448 * 448
    fps: float = 2.0  # rate of the frames given to `score`; 2 fps as the captioner's VLM (report section 3.2)
    pooling: str = "mean"  # "mean" (all positions) or "mean_max" (mean and max over the video tokens)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


def _as_uint8_clip(clip) -> np.ndarray:
    """A clip as (T, H, W, 3) uint8: accepts that layout (numpy, as decoded) or a tensor (T, 3, H, W),
    uint8 or float in [0, 1]."""
    if isinstance(clip, np.ndarray):
        return clip.astype(np.uint8, copy=False)
    clip = clip.detach().cpu()
    if clip.is_floating_point():
        clip = (clip.clamp(0, 1) * 255).round()
    return clip.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def sample_indices(num_frames: int, frames: int) -> np.ndarray:
    """``frames`` indices as consecutive pairs (t, t + 1) whose starts spread evenly over the video (first
    pair at the start, last at the end); an odd ``frames`` ends with the last frame. Adjacent frames show
    frame-to-frame defects that evenly spaced ones skip: a held (repeated) frame, flicker, noise that
    changes every frame. Each pair fills one temporal patch of the Qwen2.5-VL vision tower (2 frames)."""
    if num_frames < 2:
        return np.zeros(frames, dtype=int)
    starts = np.linspace(0, num_frames - 2, frames // 2).round().astype(int)
    pairs = np.stack([starts, starts + 1], axis=1).reshape(-1)
    return np.concatenate([pairs, [num_frames - 1] * (frames % 2)]).astype(int)


class RewardModel(nn.Module):
    def __init__(self, backbone: nn.Module, tokenizer, cfg: RewardModelConfig, seed: int = 0):
        super().__init__()
        self.backbone, self.tokenizer, self.cfg = backbone, tokenizer, cfg
        generator = torch.Generator().manual_seed(seed)
        hidden = backbone.config.text_config.hidden_size * (2 if cfg.pooling == "mean_max" else 1)
        self.head = nn.Linear(hidden, 1)
        with torch.no_grad():  # seeded, small: initial scores near 0, so the BTT loss starts near chance
            self.head.weight.copy_(torch.randn(1, hidden, generator=generator) * hidden**-0.5 * 0.1)
            self.head.bias.zero_()
        self.video_pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
        tokenizer.padding_side = "right"  # pooling masks the padding, wherever it sits

    @classmethod
    def from_backbone(cls, path: str, cfg: RewardModelConfig | None = None, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> RewardModel:
        """A fresh head on a Qwen2.5-VL folder (a ForConditionalGeneration checkpoint: its LM head is dropped)."""
        from transformers import AutoTokenizer, Qwen2_5_VLModel

        backbone = Qwen2_5_VLModel.from_pretrained(path, dtype=dtype)
        return cls(backbone, AutoTokenizer.from_pretrained(path), cfg or RewardModelConfig(), seed)

    def save(self, folder: str) -> str:
        os.makedirs(folder, exist_ok=True)
        self.backbone.save_pretrained(os.path.join(folder, BACKBONE_DIR))
        self.tokenizer.save_pretrained(os.path.join(folder, BACKBONE_DIR))
        torch.save(self.head.state_dict(), os.path.join(folder, HEAD_FILE))
        with open(os.path.join(folder, CONFIG_FILE), "w", encoding="utf-8") as fh:
            json.dump(asdict(self.cfg), fh, indent=1)
        return folder

    @classmethod
    def load(cls, folder: str, dtype: torch.dtype = torch.float32) -> RewardModel:
        with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as fh:
            cfg = RewardModelConfig(**json.load(fh))
        model = cls.from_backbone(os.path.join(folder, BACKBONE_DIR), cfg, dtype=dtype)
        model.head.load_state_dict(torch.load(os.path.join(folder, HEAD_FILE), weights_only=True))
        return model

    def prepare(self, frames) -> dict[str, torch.Tensor]:
        """Backbone inputs for a batch of clips: Tensor (B, T, 3, H, W) or a list of clips (see
        `_as_uint8_clip`); clips of different sizes are right-padded. Pure: cache it across epochs."""
        vision = self.backbone.config.vision_config
        pixels, grids, texts = [], [], []
        for clip in frames:
            patches, grid = video_inputs(_as_uint8_clip(clip), vision, self.cfg.min_pixels, self.cfg.max_pixels)
            pixels.append(patches)
            grids.append(grid)
            texts.append(TEMPLATE.format(video="<|video_pad|>" * (int(grid.prod()) // vision.spatial_merge_size**2)))
        tokens = self.tokenizer(texts, return_tensors="pt", padding=True)
        seconds = vision.temporal_patch_size / self.cfg.fps  # time covered by one temporal patch (mRoPE)
        return {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask,
                "pixel_values_videos": torch.cat(pixels), "video_grid_thw": torch.cat(grids),
                "second_per_grid_ts": torch.full((len(texts),), seconds)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) scores from `prepare`'s inputs, differentiable (training)."""
        device, dtype = self.head.weight.device, next(self.backbone.parameters()).dtype
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(dtype)
        hidden = self.backbone(**inputs).last_hidden_state.float()
        if self.cfg.pooling == "mean_max":
            video = (inputs["input_ids"] == self.video_pad).unsqueeze(-1)
            mean = (hidden * video).sum(1) / video.sum(1).clamp(min=1)
            pooled = torch.cat([mean, hidden.masked_fill(~video, float("-inf")).amax(1)], dim=-1)
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)

    @torch.no_grad()
    def score(self, frames) -> torch.Tensor:
        """(B,) motion-quality scores of clips (Tensor (B, T, 3, H, W) or a list), higher = better."""
        was_training = self.training
        self.eval()
        try:
            return self(self.prepare(frames)).cpu()
        finally:
            self.train(was_training)


def build_tiny_reward_model(folder: str, seed: int = 0, cfg: RewardModelConfig | None = None) -> RewardModel:
    """Tiny random Qwen2.5-VL backbone (built once under `folder`) with a fresh seeded head."""
    backbone = build_tiny_captioner(os.path.join(folder, "tiny-qwen2.5-vl"), seed=seed)
    return RewardModel.from_backbone(backbone, cfg, seed=seed)
