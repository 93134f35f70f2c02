"""Aesthetic scorer: CLIP image embedding + an MLP head (report section 3.1, "aesthetic filter").

Two heads over the L2-normalised CLIP image embedding, chosen by the file's keys: the public LAION
improved-aesthetic-predictor (:class:`LaionAestheticHead`, real weights, GPU profiles) and this
project's tiny GELU MLP (:class:`AestheticHead`), the CPU default, built at random: it exercises the
interface, not taste. Backbone: transformers' CLIPVisionModelWithProjection
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


class LaionAestheticHead(nn.Module):
    """The LAION improved-aesthetic-predictor head (``sac+logos+ava1-l14-linearMSE.pth``): five linear
    layers with dropout between the first four and no activation, over the L2-normalised CLIP ViT-L/14
    image embedding (768), regressing the 1-10 rating. Its state-dict keys are ``layers.{0,2,4,6,7}.*``
    (the dropouts hold indices 1, 3 and 5); this module keeps exactly those indices so the public
    file loads with ``strict=True``."""

    def __init__(self, dim: int = 768, hidden: tuple[int, int, int, int] = (1024, 128, 64, 16)):
        super().__init__()
        a, b, c, d = hidden
        self.layers = nn.Sequential(nn.Linear(dim, a), nn.Dropout(0.2), nn.Linear(a, b), nn.Dropout(0.2),
                                    nn.Linear(b, c), nn.Dropout(0.1), nn.Linear(c, d), nn.Linear(d, 1))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding).squeeze(-1)


LAION_KEYS = tuple(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))


def load_head(head_path: str, dim: int) -> nn.Module:
    """The head at ``head_path``: the LAION format (keys ``layers.*``) or this project's tiny CPU
    default (``mlp.*``, GELU MLP). ``dim``: the backbone's embedding size, which the head must take."""
    state = torch.load(head_path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint of the same module
        state = state["state_dict"]
    if set(state) == set(LAION_KEYS):
        hidden = tuple(int(state[f"layers.{i}.weight"].shape[0]) for i in (0, 2, 4, 6))
        head: nn.Module = LaionAestheticHead(int(state["layers.0.weight"].shape[1]), hidden)  # type: ignore[arg-type]
    elif state and all(k.startswith("mlp.") for k in state):
        hidden = tuple(state[k].shape[0] for k in sorted(state, key=_layer_index) if k.endswith("weight"))[:-1]
        head = AestheticHead(int(state["mlp.0.weight"].shape[1]), hidden)
    else:
        raise ValueError(f"{head_path}: neither the LAION aesthetic head (keys {LAION_KEYS[:2]}...) nor the tiny "
                         f"head (keys mlp.*); got {sorted(state)[:4]}")
    first = next(v for k, v in state.items() if k.endswith("0.weight"))
    if first.shape[1] != dim:
        raise ValueError(f"{head_path} takes {first.shape[1]}-d embeddings but the CLIP backbone gives {dim}: the "
                         "LAION head needs CLIP ViT-L/14 (openai/clip-vit-large-patch14, projection_dim 768)")
    head.load_state_dict(state)
    return head.eval()


class AestheticScorer:
    """Loads once; ``__call__(rgb_frames) -> mean rating`` over (N, H, W, 3) uint8 frames."""

    def __init__(self, backbone_path: str, head_path: str):
        from transformers import CLIPVisionModelWithProjection

        self.backbone = CLIPVisionModelWithProjection.from_pretrained(backbone_path).eval()
        self.head = load_head(head_path, self.backbone.config.projection_dim)
        self.size = self.backbone.config.image_size
        # The LAION head was fit on CLIP's own preprocessing (shorter side to 224, centre crop).
        self.centre_crop = isinstance(self.head, LaionAestheticHead)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """To the tower's square input (the tiny head: whole frame squashed; the LAION head: CLIP's
        shorter-side resize and centre crop), CLIP-normalise."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
        if self.centre_crop:
            h, w = x.shape[-2:]
            scale = self.size / min(h, w)
            x = nn.functional.interpolate(x, size=(max(self.size, round(h * scale)), max(self.size, round(w * scale))),
                                          mode="bicubic", antialias=True, align_corners=False)
            top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
            x = x[..., top : top + self.size, left : left + self.size]
        else:
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
