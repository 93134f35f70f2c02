"""Special-effects / sticker filter (report section 3.1: "special effects and stickers").

A sticker is an overlay pasted at one place on moving footage. What sets it apart from the picture
under it is that its *edges* never move: a pixel is a persistent edge when, in at least ``persist``
of the samples, it keeps its luma (within ``still_tol`` of its temporal median) AND sits on a
gradient of at least ``edge_min``. Flat moving content is still pixel-wise but carries no edge, so it
never qualifies; a still camera leaves every edge persistent, so a blob counts only when the footage
around it moves (``ring_moving_min`` of a ring around its box). Persistent-edge pixels closed into
blobs must look like an overlay: ``min_side`` to ``max_side`` of the frame height, not a thin line
(``max_aspect``: text has its own filter), not wholly inside a corner zone (the logo filter's
``corner_zone``). Quantiles rather than min/max: a black or white flash over the whole frame lasts
a sample or two and must not break a sticker's persistence. ``score_sticker``: the area share of the
largest overlay's box, 0 when there is none.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

from infra.config_filters import StickerConfig
from tasks.filters.frames import ClipFrames

MIN_SAMPLES = 4  # persistence over fewer samples says nothing


def _in_corner(x: int, y: int, w: int, h: int, width: int, height: int, zone: float) -> bool:
    return (x + w <= zone * width or x >= (1 - zone) * width) and (y + h <= zone * height or y >= (1 - zone) * height)


def persistent_edges(luma: np.ndarray, cfg: StickerConfig) -> tuple[np.ndarray, np.ndarray]:
    """(persistent-edge mask, moving mask) of a (S, H, W) luma stack."""
    y = luma.astype(np.float32)
    dev = np.abs(y - np.median(y, axis=0))
    still = (dev <= cfg.still_tol).mean(axis=0) >= cfg.persist
    grad = np.stack([np.abs(cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3))
                     for f in y]) / 4
    edge = np.quantile(grad, 1 - cfg.persist, axis=0) >= cfg.edge_min
    moving = (np.abs(np.diff(y, axis=0)) > cfg.move_tol).mean(axis=0) >= cfg.moving_share
    return still & edge, moving


def overlay_share(luma: np.ndarray, cfg: StickerConfig) -> float:
    """Area share of the largest persistent, compact, interior overlay on moving footage."""
    pers, moving = persistent_edges(luma, cfg)
    h, w = pers.shape
    close = max(3, round(cfg.close * h)) | 1
    blobs = cv2.morphologyEx(pers.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((close, close), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(blobs, connectivity=8)
    best = 0
    for x, y, bw, bh, _ in stats[1:count]:
        if not cfg.min_side * h <= min(bw, bh) <= max(bw, bh) <= cfg.max_side * h or max(bw, bh) > cfg.max_aspect * min(bw, bh):
            continue
        if _in_corner(x, y, bw, bh, w, h, cfg.corner_zone):
            continue
        r = max(2, round(0.25 * max(bw, bh)))  # a ring clear of the overlay's anti-aliased rim
        x0, y0, x1, y1 = max(0, x - r), max(0, y - r), min(w, x + bw + r), min(h, y + bh + r)
        ring = np.ones((y1 - y0, x1 - x0), bool)
        ring[y - y0:y - y0 + bh, x - x0:x - x0 + bw] = False
        if not ring.any() or moving[y0:y1, x0:x1][ring].mean() < cfg.ring_moving_min:
            continue
        best = max(best, int(bw * bh))
    return best / (h * w)


class StickerFilter:
    name = "sticker"
    columns = {"score_sticker": pa.float64()}

    def __init__(self, cfg: StickerConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        luma = clip.luma
        return {"score_sticker": overlay_share(luma, self.cfg) if len(luma) >= MIN_SAMPLES else 0.0}
