"""Static / frozen-screen filter (report section 3.1, element filters: "static screen").

A frame is frozen when it repeats the previous one while the rest of the clip moves: its mean
|luma difference| to the previous thumbnail is below ``relative_max`` x the clip's median difference
and no pixel changes by ``diff_max`` or more (re-encoding leaves a little refinement noise, so not
exactly zero). Relative, because a calm scene with a slowly moving subject also changes little per
frame; a clip that is still from end to end is the motion filter's "too static". Pairs of black
frames do not count: they are the black filter's. Score: the longest frozen stretch in seconds (a
run of k frozen frames shows k + 1 identical pictures).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from infra.config_filters import StaticConfig
from tasks.curate.filters.black import black_frames, longest_run
from tasks.curate.filters.frames import ClipFrames

BLACK_LUMA = 24.0  # the black filter's default: black pairs are not "frozen"


def frozen_pairs(thumbs: np.ndarray, cfg: StaticConfig) -> np.ndarray:
    """(N-1,) bool: frame i+1 repeats frame i (see the module docstring)."""
    t = thumbs.astype(np.int16)
    diff = np.abs(t[1:] - t[:-1])
    mean, peak = diff.mean(axis=(1, 2)), diff.max(axis=(1, 2))
    black = black_frames(thumbs, BLACK_LUMA)
    return (mean < cfg.relative_max * np.median(mean)) & (peak < cfg.diff_max) & ~(black[1:] & black[:-1])


class StaticFilter:
    name = "static"
    columns = {"score_static_s": pa.float64(), "score_static_ratio": pa.float64()}

    def __init__(self, cfg: StaticConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        if clip.num_frames < 3:
            return {"score_static_s": 0.0, "score_static_ratio": 0.0}
        frozen = frozen_pairs(clip.thumbs, self.cfg)
        run = longest_run(frozen)
        return {"score_static_s": (run + 1) / clip.fps if run else 0.0, "score_static_ratio": float(frozen.mean())}
