"""Black-screen filter (report section 3.1, element filters: "black screen").

A frame is black when even its brightest pixels are dark (99th-percentile luma below
``luma_max``), so a dark but lit scene is not black. The score is the longest black run in seconds:
a flash of 3 black frames inside a shot is what a training clip must not contain.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from infra.config_filters import BlackConfig
from tasks.curate.filters.frames import ClipFrames


def longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate(([0], np.asarray(mask, np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max()) if len(starts) else 0


def black_frames(thumbs: np.ndarray, luma_max: float) -> np.ndarray:
    """(N,) bool: frames whose 99th-percentile luma is below ``luma_max``."""
    flat = thumbs.reshape(len(thumbs), -1)
    k = int(0.99 * (flat.shape[1] - 1))
    # The k-th smallest value lies below luma_max iff more than k values do: a count, no partial sort.
    return np.count_nonzero(flat < luma_max, axis=1) > k


class BlackFilter:
    name = "black"
    columns = {"score_black_s": pa.float64(), "score_black_ratio": pa.float64()}

    def __init__(self, cfg: BlackConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        black = black_frames(clip.thumbs, self.cfg.luma_max)
        return {"score_black_s": longest_run(black) / clip.fps, "score_black_ratio": float(black.mean())}
