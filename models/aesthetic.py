"""Aesthetic scorer: CLIP image embedding + an MLP head (report section 3.1, "aesthetic filter").

The head follows the widely used LAION aesthetic predictor shape (an MLP over the L2-normalised
CLIP image embedding, regressing a 1-10 rating). Backbone: transformers' CLIPVisionModelWithProjection
is the CPU path: open_clip needs torchvision, whose registry build here is a CUDA build that fails to
import beside the CPU torch; transformers' CLIP classes need neither, and load the same OpenAI CLIP
weights (e.g. a local copy of openai/clip-vit-large-patch14). Both load from paths; the tiny profile
builds random weights once into a folder so the same ``from_pretrained`` path runs. No I/O besides
loading and that one build.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP preprocessing constants
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class AestheticHead(nn.Module):
    """MLP over a unit-norm image embedding -> one rating."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (1024, 128, 64, 16)):
        super().__init__()
        layers, width = [], dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GELU()]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.mlp(embedding).squeeze(-1)


def build_tiny(folder: str, seed: int = 0) -> tuple[str, str]:
    """A random tiny CLIP vision tower (``folder/backbone``) and head (``folder/head.pt``), once."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    backbone, head = os.path.join(folder, "backbone"), os.path.join(folder, "head.pt")
    if os.path.exists(head):
        return backbone, head
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16, projection_dim=32)
    CLIPVisionModelWithProjection(cfg).save_pretrained(backbone)
    tmp = head + ".tmp"
    torch.save(AestheticHead(cfg.projection_dim, hidden=(32, 16)).state_dict(), tmp)
    os.replace(tmp, head)  # the head's presence marks a complete build
    return backbone, head


class AestheticScorer:
    """Loads once; ``__call__(rgb_frames) -> mean rating`` over (N, H, W, 3) uint8 frames."""

    def __init__(self, backbone_path: str, head_path: str):
        from transformers import CLIPVisionModelWithProjection

        self.backbone = CLIPVisionModelWithProjection.from_pretrained(backbone_path).eval()
        state = torch.load(head_path, map_location="cpu", weights_only=True)
        hidden = tuple(state[k].shape[0] for k in sorted(state, key=_layer_index) if k.endswith("weight"))[:-1]
        self.head = AestheticHead(self.backbone.config.projection_dim, hidden)
        self.head.load_state_dict(state)
        self.head.eval()
        self.size = self.backbone.config.image_size

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """Squash to the tower's square input (whole frame kept), CLIP-normalise."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
        x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> float:
        emb = self.backbone(pixel_values=self.preprocess(frames)).image_embeds
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return float(self.head(emb).mean())


def _layer_index(key: str) -> int:
    return int(key.split(".")[1])  # "mlp.<i>.weight"
