"""Motion filter (report section 3.1: "motion filter", too static or too chaotic).

Dense Farneback optical flow between consecutive thumbnails at ``pairs`` evenly spaced moments.
``score_motion``: median flow speed as a share of the frame diagonal per second (the corpus truth's
camera-speed unit). ``score_motion_incoherence``: 1 - |mean flow| / mean |flow| (0 for a clean pan,
near 1 when things move every which way).
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

from infra.config_filters import MotionConfig
from tasks.curate.filters.frames import ClipFrames


def flow_stats(prev: np.ndarray, nxt: np.ndarray) -> tuple[float, float]:
    """(mean flow magnitude in pixels, magnitude of the mean flow vector) between two grey frames."""
    flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 9, 3, 5, 1.1, 0)
    mag = np.linalg.norm(flow, axis=2)
    return float(mag.mean()), float(np.linalg.norm(flow.reshape(-1, 2).mean(axis=0)))


class MotionFilter:
    name = "motion"
    columns = {"score_motion": pa.float64(), "score_motion_incoherence": pa.float64()}

    def __init__(self, cfg: MotionConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        n = clip.num_frames
        if n < 2:
            return {"score_motion": 0.0, "score_motion_incoherence": 0.0}
        starts = np.unique(np.linspace(0, n - 2, self.cfg.pairs).round().astype(int))
        stats = np.array([flow_stats(clip.thumbs[i], clip.thumbs[i + 1]) for i in starts])
        h, w = clip.thumbs.shape[1:]
        speed = float(np.median(stats[:, 0])) * clip.fps / np.hypot(w, h)
        mean_mag = stats[:, 0].mean()
        incoherence = 1.0 - stats[:, 1].mean() / mean_mag if mean_mag > 1e-3 else 0.0
        return {"score_motion": speed, "score_motion_incoherence": float(incoherence)}
