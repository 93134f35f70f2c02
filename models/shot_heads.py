"""Shot sub-expert (report section 3.2, Shot Captioner): shot type, angle and position as three
classifier heads over one CLIP image embedding.

The report trains its shot classifiers in two phases (web-scale pretraining, then ~2,000 finely
labelled samples); here the heads (and optionally the tower) train on any labelled clips with
:func:`train_shot_heads`. Backbone: transformers' ``CLIPVisionModelWithProjection`` loaded from a
path (a real CLIP in production); the tiny profile builds a random tower once into a folder, as the
aesthetic scorer does. A clip's embedding is the mean over a few frames. No I/O beyond loading and
saving the weights.
"""

from __future__ import annotations

import os
from typing import get_args

import numpy as np
import torch
from torch import nn

from models.caption_schema import ShotAngle, ShotPosition, ShotType

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP preprocessing constants
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TASKS: dict[str, tuple[str, ...]] = {
    "shot_type": get_args(ShotType), "shot_angle": get_args(ShotAngle), "shot_position": get_args(ShotPosition),
}
BACKBONE, HEADS = "backbone", "heads.pt"  # layout of a shot-expert folder


class ShotHeads(nn.Module):
    """One linear head per task over the unit-norm image embedding (a linear probe). The
    LayerNorm restores a usable scale: a unit vector's logits would stay near zero."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleDict({task: nn.Linear(dim, len(classes)) for task, classes in TASKS.items()})

    def forward(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.norm(embedding)
        return {task: head(x) for task, head in self.heads.items()}


def tiny_backbone(seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16, projection_dim=32)
    return CLIPVisionModelWithProjection(cfg)


def build_tiny(folder: str, seed: int = 0) -> str:
    """A random tiny tower + random heads in ``folder`` (once); returns the folder."""
    if not os.path.exists(os.path.join(folder, HEADS)):
        backbone = tiny_backbone(seed)
        save_expert(folder, backbone, ShotHeads(backbone.config.projection_dim))
    return folder


def save_expert(folder: str, backbone, heads: ShotHeads, metrics: dict | None = None) -> str:
    os.makedirs(folder, exist_ok=True)
    backbone.save_pretrained(os.path.join(folder, BACKBONE))
    tmp = os.path.join(folder, HEADS + ".tmp")
    torch.save({"state": heads.state_dict(), "classes": TASKS, "metrics": metrics or {}}, tmp)
    os.replace(tmp, os.path.join(folder, HEADS))  # the heads file's presence marks a complete folder
    return folder


def preprocess(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> CLIP-normalised (N, 3, size, size); the whole frame is kept
    (squashed, not centre-cropped: framing is what a shot label is about)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def embed(backbone, frames: np.ndarray) -> torch.Tensor:
    """Unit-norm mean embedding of a clip's frames: (N, H, W, 3) -> (dim,)."""
    emb = backbone(pixel_values=preprocess(frames, backbone.config.image_size)).image_embeds
    emb = emb / emb.norm(dim=-1, keepdim=True)
    mean = emb.mean(0)
    return mean / mean.norm().clamp_min(1e-8)


class ShotClassifier:
    """Loads a shot-expert folder once; ``__call__(frames) -> {shot_type, shot_angle, shot_position}``."""

    def __init__(self, folder: str):
        from transformers import CLIPVisionModelWithProjection

        self.backbone = CLIPVisionModelWithProjection.from_pretrained(os.path.join(folder, BACKBONE)).eval()
        saved = torch.load(os.path.join(folder, HEADS), map_location="cpu", weights_only=True)
        if {k: tuple(v) for k, v in saved["classes"].items()} != TASKS:
            raise ValueError(f"{folder}: heads were trained for other classes: {saved['classes']}")
        self.heads = ShotHeads(self.backbone.config.projection_dim)
        self.heads.load_state_dict(saved["state"])
        self.heads.eval()

    @torch.no_grad()
    def probabilities(self, frames: np.ndarray) -> dict[str, dict[str, float]]:
        logits = self.heads(embed(self.backbone, _as_clip(frames))[None])
        return {task: dict(zip(TASKS[task], logits[task][0].softmax(-1).tolist(), strict=True)) for task in TASKS}

    def __call__(self, frames: np.ndarray) -> dict[str, str]:
        return {task: max(p, key=p.get) for task, p in self.probabilities(frames).items()}


def _as_clip(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    return frames[None] if frames.ndim == 3 else frames


def train_shot_heads(
    clips_with_labels: list[tuple[np.ndarray, dict[str, str]]],
    backbone=None,
    *,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 32,
    finetune_backbone: bool = True,
    seed: int = 0,
) -> tuple[object, ShotHeads, list[float]]:
    """Train the heads (and the tower when ``finetune_backbone``) on ``(frames, labels)`` pairs;
    ``labels`` holds any subset of the three tasks (a clip missing a task does not train it).
    Frames are (N, H, W, 3) or (H, W, 3) uint8 RGB. Returns (backbone, heads, loss per epoch)."""
    torch.manual_seed(seed)
    backbone = backbone if backbone is not None else tiny_backbone(seed)
    heads = ShotHeads(backbone.config.projection_dim)
    size = backbone.config.image_size
    # One frame per clip and step (the middle one when several): the head sees what inference sees.
    pixels = torch.cat([preprocess(_as_clip(f)[len(_as_clip(f)) // 2][None], size) for f, _ in clips_with_labels])
    targets = {task: torch.tensor([TASKS[task].index(lab[task]) if task in lab else -100 for _, lab in clips_with_labels])
               for task in TASKS}
    params = list(heads.parameters()) + (list(backbone.parameters()) if finetune_backbone else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    backbone.train(finetune_backbone)
    losses, gen = [], torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order, total = torch.randperm(len(pixels), generator=gen), 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            with torch.set_grad_enabled(finetune_backbone):
                emb = backbone(pixel_values=pixels[idx]).image_embeds
            logits = heads(emb / emb.norm(dim=-1, keepdim=True))
            loss = sum(nn.functional.cross_entropy(logits[t], targets[t][idx], ignore_index=-100)
                       for t in TASKS if (targets[t][idx] >= 0).any())
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(pixels))
    backbone.eval()
    heads.eval()
    return backbone, heads, losses


@torch.no_grad()
def evaluate_shot_heads(backbone, heads: ShotHeads, clips_with_labels: list[tuple[np.ndarray, dict[str, str]]]) -> dict:
    """Accuracy per task over the clips that carry that task's label."""
    hits: dict[str, list[bool]] = {task: [] for task in TASKS}
    for frames, labels in clips_with_labels:
        logits = heads(embed(backbone, _as_clip(frames))[None])
        for task in TASKS:
            if task in labels:
                hits[task].append(TASKS[task][int(logits[task].argmax())] == labels[task])
    return {task: {"accuracy": round(float(np.mean(h)), 4), "clips": len(h)} for task, h in hits.items() if h}
