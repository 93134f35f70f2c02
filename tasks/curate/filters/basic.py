"""Duration and source/resolution filters (report section 3.1: clips shorter than the training length
and low-resolution sources are dropped by the profiles). From the clip table alone: no decode."""

from __future__ import annotations

import pyarrow as pa


class BasicFilter:
    name = "basic"
    columns = {"score_duration_s": pa.float64(), "score_resolution": pa.int32(), "score_fps": pa.float64()}

    def __init__(self, cfg=None):
        self.cfg = cfg

    def __call__(self, row: dict) -> dict:
        fps = float(row["fps"] or 0.0)
        return {
            "score_duration_s": row["num_frames"] / fps if fps > 0 else 0.0,
            "score_resolution": min(int(row["width"]), int(row["height"])),  # short side, as "720p" names it
            "score_fps": fps,
        }
