"""Special-effects / sticker filter (report section 3.1: "special effects and stickers").

A sticker is a still overlay on moving content: pixels whose luma barely changes across the samples
(temporal std below ``still_max``) forming a compact blob surrounded by moving pixels. Blobs that
touch the frame edge (bars) are not overlays of this kind. Only measurable when the content moves:
with less than ``moving_min`` of the frame moving, the score is 0. ``score_sticker``: the area share
of the largest interior still blob.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

from infra.config_filters import StickerConfig
from tasks.filters.frames import ClipFrames


def still_blob(grey: np.ndarray, cfg: StickerConfig) -> float:
    std = grey.astype(np.float32).std(axis=0)
    moving = std >= 4 * cfg.still_max
    if moving.mean() < cfg.moving_min:
        return 0.0
    still = (std < cfg.still_max).astype(np.uint8)
    still = cv2.morphologyEx(still, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(still, connectivity=4)
    h, w = still.shape
    best = 0
    for k in range(1, count):
        x, y, bw, bh, area = stats[k]
        if x == 0 or y == 0 or x + bw == w or y + bh == h:
            continue
        best = max(best, int(area))
    return best / (h * w)


class StickerFilter:
    name = "sticker"
    columns = {"score_sticker": pa.float64()}

    def __init__(self, cfg: StickerConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        grey = clip.grey_samples
        return {"score_sticker": still_blob(grey, self.cfg) if len(grey) >= 3 else 0.0}
