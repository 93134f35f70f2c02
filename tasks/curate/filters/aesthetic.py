"""Aesthetic filter (report section 3.1): CLIP image embedding + aesthetic MLP head, see
:mod:`models.aesthetic`. ``backbone_path`` / ``head_path`` point at real weights; left unset (the
tiny profile) a random tiny pair is built once under ``cache_dir``: the score then exercises the
interface, not taste."""

from __future__ import annotations

import os

import pyarrow as pa

from infra import storage
from infra.config_filters import AestheticConfig
from models.aesthetic import AestheticScorer, build_tiny
from tasks.curate.filters.frames import ClipFrames


class AestheticFilter:
    name = "aesthetic"
    columns = {"score_aesthetic": pa.float64()}

    def __init__(self, cfg: AestheticConfig):
        import torch

        torch.set_num_threads(1)  # parallelism comes from actors; the machine is shared
        self.cfg = cfg
        backbone, head = cfg.backbone_path, cfg.head_path
        if backbone is None or head is None:
            backbone, head = build_tiny(os.path.join(cfg.cache_dir, "aesthetic-tiny"))
        # Weights shared under a remote run root: this node's cached copy.
        backbone = storage.fetch_folder(backbone) if storage.is_remote(backbone) else backbone
        if storage.is_remote(head):
            head = os.path.join(storage.fetch_folder(head.rsplit("/", 1)[0]), head.rsplit("/", 1)[1])
        self.scorer = AestheticScorer(backbone, head)

    def __call__(self, clip: ClipFrames) -> dict:
        return {"score_aesthetic": self.scorer(clip.samples[clip.pick(self.cfg.frames)])}
