"""Which captioner folder a caption config names: shared by the caption stage and the captioner's distillation."""

from __future__ import annotations

import os

from infra.config_caption import CaptionConfig
from models.captioner import build_tiny_captioner


def captioner_path(cfg: CaptionConfig) -> str:
    """``captioner.model_path``, or the tiny random captioner built once under ``cache_dir``."""
    return cfg.captioner.model_path or build_tiny_captioner(os.path.join(cfg.cache_dir, "captioner-tiny"))
