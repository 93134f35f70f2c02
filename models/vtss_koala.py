"""Koala-36M's Video Training Suitability Score (Wang et al., "Koala-36M: A Large-scale Video Dataset
Improving Consistency between Fine-grained Conditions and Video Content", 2024, section 3.3), loaded from
the public checkpoint (``Koala-36M/Training_Suitability_Assessment``, file ``ckpt/infer.pth``).

The released inference (``training_suitability_assessment/inference.py`` with ``test.yml``) builds a
fragment evaluator with the ``swin_tiny_grpb`` backbone and one ``vqa_head`` (768 -> 64 -> 1): exactly
FAST-VQA's structure and key layout (``{"state_dict": {fragments_backbone.*, vqa_head.*}}``), fine-tuned on
training-suitability labels. So the model, the loader and the spatial fragments are
:mod:`models.vqa_fast`'s; what differs is the temporal sampling and the score:
- frames: the clip is cut into ``num_clips`` (4) equal segments and each gives ``clip_len`` (32) frames at
  stride 2 (the release's ``FragmentSampleFrames(clip_len, num_clips, frame_interval)``); the release
  starts each run at a random offset inside its segment, here the centre of that range, so scores are
  deterministic; indices wrap around a short clip;
- score: the raw mean of the head over all clips and positions. The release z-scores raw outputs over the
  whole scored set; per clip that is ``(raw - set_mean) / set_std``, so this maps
  ``sigmoid((raw - mean) / std)`` into (0, 1) with the calibration given (defaults 0 and 1:
  uncalibrated; set them to the mean and std of raw scores over a reference set of your corpus).
"""

from __future__ import annotations

import numpy as np
import torch

from models.vqa_fast import fragment_batch, load_evaluator, mean_score


def koala_clip_indices(num_frames: int, clip_len: int, interval: int, num_clips: int) -> np.ndarray:
    """One run of ``clip_len`` frames at stride ``interval`` per equal segment, centred in its slack."""
    segment = num_frames // num_clips
    slack = segment - clip_len * interval
    start = slack // 2 if slack > 0 else 0  # the release: uniform in [0, slack) when slack > 0, else 0
    runs = np.arange(num_clips)[:, None] * segment + start + np.arange(clip_len)[None] * interval
    return np.mod(runs, max(num_frames, 1)).reshape(-1)


class KoalaVTSS:
    """Koala-36M's VTSS from a public-format checkpoint: ``score(frames) -> (raw, score in (0, 1))``."""

    def __init__(self, path: str, mean: float = 0.0, std: float = 1.0, clip_len: int = 32, num_clips: int = 4,
                 interval: int = 2, device: str | None = None):
        if std <= 0:
            raise ValueError(f"VTSS calibration std must be > 0, got {std}")
        self.model = load_evaluator(path, device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.mean, self.std = mean, std
        self.clip_len, self.num_clips, self.interval = clip_len, num_clips, interval

    def score(self, frames: np.ndarray) -> tuple[float, float]:
        idx = koala_clip_indices(len(frames), self.clip_len, self.interval, self.num_clips)
        raw = mean_score(self.model, fragment_batch(frames, idx, self.clip_len))
        return raw, float(1.0 / (1.0 + np.exp(-(raw - self.mean) / self.std)))
