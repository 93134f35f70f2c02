"""A tiny overfit set for trainer tests: fixed latents and text features, two buckets, in memory.

It implements the latent cache's reader interface (``buckets()``, ``get(i)``) so the real training loop
runs on it unchanged; the end-to-end tests use the real cache built from clips."""

from __future__ import annotations

import torch

from infra.config import load_config
from tasks.train.lib.latent_cache import Sample


class OverfitSet:
    def __init__(self, n: int = 4, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            frames = 3 if i % 2 == 0 else 1  # a video bucket and an image bucket
            # smooth latents (low-frequency patterns), so the DiT has structure to fit
            base = torch.randn(16, 1, 2, 4, generator=gen)
            latent = torch.nn.functional.interpolate(base, size=(4, 8), mode="bilinear", align_corners=False)
            latent = latent.unsqueeze(1).repeat(1, frames, 1, 1, 1).reshape(16, frames, 4, 8)
            self.items.append(Sample(f"clip{i}", "video" if frames > 1 else "image", f"f{frames}",
                                     latent.contiguous(), torch.randn(5 + i, 32, generator=gen), 24 if i % 3 else 16))

    def buckets(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, item in enumerate(self.items):
            out.setdefault(item.bucket, []).append(i)
        return out

    def get(self, i: int) -> Sample:
        return self.items[i]


def stage_cfg(steps: int = 40, **update):
    cfg = load_config("tiny")
    stage = cfg.train.stages["pretrain-256p"].model_copy(
        update={"steps": steps, "lr": 1e-3, "lr_end": None, "warmup_steps": 0, "checkpoint_every": 5, **update})
    return cfg.train, stage
