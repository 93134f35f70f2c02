"""Special-effects / sticker filter (report section 3.1: "special effects and stickers").

A sticker is an overlay pasted at one place on moving footage. What sets it apart from the picture
under it is that its *edges* never move: a pixel is a persistent edge when, in at least ``persist``
of the samples, it keeps its luma (within ``still_tol`` of its temporal median) AND sits on a
gradient of at least ``edge_min``. Flat moving content is still pixel-wise but carries no edge, so it
never qualifies; a still camera leaves every edge persistent, so a blob counts only when the footage
around it moves (``ring_moving_min`` of a ring around its box) or, under a slow camera, drifts away
from its median over the clip (``RING_CHANGING_MIN`` of the ring), or, when the ring is flat (sky, a
smooth wall, fine grain: nothing there can show motion), the camera visibly moves elsewhere: the
scene's steady edges are not still (``SCENE_STILL_MAX``) and hardly any edge seen in it over the clip
sits on a persistent pixel (``SCENE_EDGE_PERSIST_MAX``). Persistent-edge pixels closed into
blobs must look like an overlay: ``min_side`` to ``max_side`` of the frame height, not a thin line
(``max_aspect``: text has its own filter), not wholly inside a corner zone of the picture (the logo
filter's ``corner_zone``), dense enough in persistent edges (``EDGE_DENSITY_MIN``). Quantiles rather than
min/max: a black or white flash over the whole frame lasts a sample or two and must not break a
sticker's persistence. The ring is taken inside the picture (the border filter's box): letterbox /
pillarbox bars never move, and a sticker pasted next to them would otherwise look like part of a
still scene. ``score_sticker``: the area share of the largest overlay's box, 0 when there is none.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import pyarrow as pa

from infra.config_filters import StickerConfig
from tasks.curate.filters.border import clip_picture_box
from tasks.curate.filters.frames import ClipFrames

MIN_SAMPLES = 4  # persistence over fewer samples says nothing
BAR_EDGE = 2  # pixels: a bar's inner edge as the 3x3 Sobel sees it
# A slow camera over soft footage changes each pixel little from one sample to the next, so the ring
# fails ``ring_moving_min``; over the clip, though, the footage around a sticker drifts off its
# median almost everywhere, while around a still scene's own edges most of it stays put.
RING_CHANGING_MIN = 0.7
# A pasted shape's outline is continuous, so persistent edges fill a good part of its box; texture
# that happens to hold still for a while (grain, a slow pan over fine detail) leaves a sparse scatter.
EDGE_DENSITY_MIN = 0.1
# A sticker over flat footage has a ring that cannot move, whatever the camera does. The scene outside
# the ring then tells the camera: under a still camera its steady edges (an edge in ``persist`` of the
# samples) are nearly all persistent too (0.3-1.0 on the synthetic corpus, a moving subject's edges are
# not steady), under a moving one they are not (0-0.16); and the edges seen anywhere in it over the
# clip hardly ever sit on persistent pixels (0-0.01 for the stickers, 0.02-0.3 for still scenes).
SCENE_STILL_MAX = 0.2
SCENE_EDGE_PERSIST_MAX = 0.03
SCENE_STEADY_MIN = 0.001  # share of the frame: fewer steady edges than this say nothing about the camera
# With only the scene to vouch for it, the blob itself must look pasted: a clean outline fills its box
# (corpus stickers 0.25-0.39) where still bits of a blocky or noisy scene leave 0.1-0.12.
FLAT_RING_DENSITY_MIN = 0.2


def _in_corner(x: int, y: int, w: int, h: int, width: int, height: int, zone: float) -> bool:
    return (x + w <= zone * width or x >= (1 - zone) * width) and (y + h <= zone * height or y >= (1 - zone) * height)


class EdgeMaps(NamedTuple):
    """Per-pixel maps of a (S, H, W) luma stack."""

    persistent: np.ndarray  # still AND on an edge in ``persist`` of the samples
    steady: np.ndarray  # on an edge in ``persist`` of the samples, still or not
    edge_count: np.ndarray  # samples in which the pixel is on an edge
    moving: np.ndarray  # changes by ``move_tol`` between consecutive samples in ``moving_share`` of the steps
    changing: np.ndarray  # not still: leaves its temporal median in more than ``1 - persist`` of the samples


def persistent_edges(luma: np.ndarray, cfg: StickerConfig) -> EdgeMaps:
    """The edge and motion maps of a (S, H, W) luma stack (see :class:`EdgeMaps`)."""
    y = luma.astype(np.float32)
    dev = np.abs(y - np.median(y, axis=0))
    still = (dev <= cfg.still_tol).mean(axis=0) >= cfg.persist
    grad = np.stack([np.abs(cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3))
                     for f in y]) / 4
    steady = np.quantile(grad, 1 - cfg.persist, axis=0) >= cfg.edge_min
    edge_count = (grad >= cfg.edge_min).sum(axis=0)
    moving = (np.abs(np.diff(y, axis=0)) > cfg.move_tol).mean(axis=0) >= cfg.moving_share
    return EdgeMaps(still & steady, steady, edge_count, moving, ~still)


def camera_moves(maps: EdgeMaps, scene: np.ndarray) -> bool:
    """Whether the footage in ``scene`` (a mask: the picture less an overlay's surroundings) shows a
    moving camera: its steady edges are mostly not still and few of its edge sightings are persistent.
    Too few steady edges (a flat or blurred scene) say nothing: False."""
    steady = maps.steady[scene]
    if steady.sum() < SCENE_STEADY_MIN * scene.size:
        return False
    persistent, seen = maps.persistent[scene], maps.edge_count[scene]
    return (persistent.sum() <= SCENE_STILL_MAX * steady.sum()
            and (seen * persistent).sum() <= SCENE_EDGE_PERSIST_MAX * seen.sum())


def overlay_share(luma: np.ndarray, cfg: StickerConfig, picture: tuple[int, int, int, int] | None = None) -> float:
    """Area share of the largest persistent, compact, interior overlay on moving footage; ``picture``:
    (x, y, w, h) of the picture inside bars, where the ring around an overlay is measured."""
    maps = persistent_edges(luma, cfg)
    pers, moving, changing = maps.persistent.copy(), maps.moving, maps.changing
    h, w = pers.shape
    inside = np.zeros((h, w), bool)
    px, py, pw, ph = picture or (0, 0, w, h)
    inside[py:py + ph, px:px + pw] = True
    interior = inside
    if (pw, ph) != (w, h):  # the bars' inner edge is a persistent edge too: not part of any overlay
        interior = cv2.erode(inside.astype(np.uint8), np.ones((2 * BAR_EDGE + 1,) * 2, np.uint8),
                             borderType=cv2.BORDER_REPLICATE).astype(bool)
        pers &= interior
    close = max(3, round(cfg.close * h)) | 1
    blobs = cv2.morphologyEx(pers.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((close, close), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(blobs, connectivity=8)
    best = 0
    for x, y, bw, bh, _ in stats[1:count]:
        if not cfg.min_side * h <= min(bw, bh) <= max(bw, bh) <= cfg.max_side * h or max(bw, bh) > cfg.max_aspect * min(bw, bh):
            continue
        density = pers[y:y + bh, x:x + bw].mean()
        # the picture's corners, not the frame's: a pillarboxed take's logo sits in its own
        if _in_corner(x - px, y - py, bw, bh, pw, ph, cfg.corner_zone) or density < EDGE_DENSITY_MIN:
            continue
        r = max(2, round(0.25 * max(bw, bh)))  # a ring clear of the overlay's anti-aliased rim
        x0, y0, x1, y1 = max(0, x - r), max(0, y - r), min(w, x + bw + r), min(h, y + bh + r)
        ring = inside[y0:y1, x0:x1].copy()
        ring[y - y0:y - y0 + bh, x - x0:x - x0 + bw] = False
        if not ring.any() or (moving[y0:y1, x0:x1][ring].mean() < cfg.ring_moving_min
                              and changing[y0:y1, x0:x1][ring].mean() < RING_CHANGING_MIN):
            scene = interior.copy()
            scene[y0:y1, x0:x1] = False
            if density < FLAT_RING_DENSITY_MIN or not camera_moves(maps, scene):
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
        if len(luma) < MIN_SAMPLES:
            return {"score_sticker": 0.0}
        return {"score_sticker": overlay_share(luma, self.cfg, clip_picture_box(clip))}
