"""Logo filter (report section 3.1: "logo", a persistent mark in a corner).

A channel mark stays in one corner, at one place, while the picture changes. ``score_logo``: the
largest share of OCR'd samples showing a line wholly inside a corner at the place of one sighting
(IoU >= ``SAME_PLACE``). The lines come from the text filter's single OCR pass; a corner line
seen once (a passing sign) scores low, a mark present throughout scores 1.

Most channel marks are not text: shapes, a tiny picture, a pixelated emblem, laid over the footage
at 80-100% opacity. They are found as the sticker filter finds its overlays, by edges that never
move (:func:`tasks.curate.filters.sticker.persistent_edges`), but only wholly inside a corner zone of
the picture and only small (``MARK_SIDE``): a compact, dense blob of persistent edges whose
surroundings move (the ring around it, or the footage elsewhere when the ring is flat). A mark that
lets some of the picture through (opacity < 1) shifts its luma by a share of the footage's change
under it, so its pixels are ``MARK_STILL_TOL`` still, looser than a sticker's. Its score is the
share of samples in which most of its edge pixels hold their luma: 1 for a mark there throughout.
``score_logo`` is the larger of the text and the mark measure.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

from infra.config_filters import LogoConfig, StickerConfig, TextConfig
from tasks.curate.filters.border import clip_picture_box
from tasks.curate.filters.frames import ClipFrames
from tasks.curate.filters.ocr import in_picture_corner, make_reader, picture_share, read_clip
from tasks.curate.filters.sticker import MIN_SAMPLES, camera_moves, persistent_edges

SAME_PLACE = 0.5
MARK_SIDE = (0.06, 0.2)  # a mark's box side, share of the picture height (broadcast marks: ~8-13%)
# luma levels a mark's pixel may move and stay "still": 15% of a footage change of 50 levels. 12-16
# found two more pixelated marks over busy footage on the real set's seed 0 but took a slow camera's
# corner edges for a mark on seed 1 and on the synthetic corpus
MARK_STILL_TOL = 8.0
MARK_DENSITY_MIN = 0.15  # persistent edges fill at least this much of a mark's box (a clean outline)
MARK_RING_MOVING_MIN = 0.5  # share of the ring around it that moves or drifts off its median


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / max(aw * ah + bw * bh - inter, 1e-9)


def corner_persistence(pages: list[list], zone: float, picture: tuple[float, float, float, float] = (0, 0, 1, 1)) -> float:
    """Largest share of pages showing a corner line (a corner of ``picture``, the area between any
    bars, as shares of the frame) at the place of some corner line."""
    sightings = [ln.box for page in pages for ln in page if in_picture_corner(ln.box, picture, zone)]
    best = 0
    for ref in sightings:
        best = max(best, sum(any(_iou(ref, ln.box) >= SAME_PLACE for ln in page) for page in pages))
    return best / max(len(pages), 1)


def text_mask(pages: list[list], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels under any OCR'd line of any page (boxes are shares of the frame)."""
    h, w = shape
    mask = np.zeros((h, w), bool)
    for ln in (ln for page in pages for ln in page):
        x, y, bw, bh = ln.box
        mask[max(0, int(y * h)):int(np.ceil((y + bh) * h)), max(0, int(x * w)):int(np.ceil((x + bw) * w))] = True
    return mask


def corner_mark(luma: np.ndarray, picture: tuple[int, int, int, int], zone: float, sticker: StickerConfig,
                text: np.ndarray | None = None) -> float:
    """Share of samples showing the strongest persistent mark wholly inside a corner of ``picture``
    (module docstring); 0 when there is none. ``text``: pixels under OCR'd lines; a blob touching
    them is text (a subtitle's end in a corner zone, a caption), the OCR measure's to judge."""
    if len(luma) < MIN_SAMPLES:
        return 0.0
    cfg = sticker.model_copy(update={"still_tol": MARK_STILL_TOL})
    maps = persistent_edges(luma, cfg)
    h, w = maps.persistent.shape
    px, py, pw, ph = picture
    inside = np.zeros((h, w), bool)
    inside[py:py + ph, px:px + pw] = True
    interior = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(bool)
    corners = np.zeros((h, w), bool)
    zx, zy = round(zone * pw), round(zone * ph)
    for ys in (slice(py, py + zy), slice(py + ph - zy, py + ph)):
        for xs in (slice(px, px + zx), slice(px + pw - zx, px + pw)):
            corners[ys, xs] = True
    pers = maps.persistent & interior & corners
    close = max(3, round(sticker.close * h)) | 1
    blobs = cv2.morphologyEx(pers.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((close, close), np.uint8)) & corners
    count, labels, stats, _ = cv2.connectedComponentsWithStats(blobs.astype(np.uint8), connectivity=8)
    y = luma.astype(np.float32)
    best, strict = 0.0, None
    for k in range(1, count):
        x, yy, bw, bh, _ = stats[k]
        if not MARK_SIDE[0] * ph <= min(bw, bh) <= max(bw, bh) <= MARK_SIDE[1] * ph or max(bw, bh) > 2.5 * min(bw, bh):
            continue
        if pers[yy:yy + bh, x:x + bw].mean() < MARK_DENSITY_MIN:
            continue
        if text is not None and text[yy:yy + bh, x:x + bw].any():
            continue
        r = max(2, round(0.5 * max(bw, bh)))
        x0, y0, x1, y1 = max(0, x - r), max(0, yy - r), min(w, x + bw + r), min(h, yy + bh + r)
        ring = inside[y0:y1, x0:x1].copy()
        ring[yy - y0:yy - y0 + bh, x - x0:x - x0 + bw] = False
        around = (maps.moving | maps.changing)[y0:y1, x0:x1][ring]
        if not around.size or around.mean() < MARK_RING_MOVING_MIN:
            # flat surroundings: only the camera elsewhere vouches, and a slow camera keeps a scene's
            # own corner edges within the loose tolerance; the mark must then hold a sticker's stillness
            strict = strict if strict is not None else persistent_edges(luma, sticker).persistent
            if strict[yy:yy + bh, x:x + bw].mean() < MARK_DENSITY_MIN or not camera_moves(maps, interior & ~corners):
                continue
        edge = pers[yy:yy + bh, x:x + bw]
        dev = np.abs(y[:, yy:yy + bh, x:x + bw] - np.median(y[:, yy:yy + bh, x:x + bw], axis=0))[:, edge]
        best = max(best, float(((dev <= MARK_STILL_TOL).mean(axis=1) >= 0.5).mean()))
    return best


class LogoFilter:
    name = "logo"
    columns = {"score_logo": pa.float64()}

    def __init__(self, cfg: LogoConfig, text_cfg: TextConfig, reader=None, sticker_cfg: StickerConfig | None = None):
        self.cfg, self.text_cfg = cfg, text_cfg
        self.sticker_cfg = sticker_cfg or StickerConfig()
        self.reader = reader or make_reader(text_cfg)

    def __call__(self, clip: ClipFrames) -> dict:
        pages = read_clip(clip, self.reader, self.text_cfg)
        text = corner_persistence(pages, self.text_cfg.corner_zone, picture_share(clip))
        mark = corner_mark(clip.luma, clip_picture_box(clip), self.text_cfg.corner_zone, self.sticker_cfg,
                           text_mask(pages, clip.luma.shape[1:]))
        return {"score_logo": max(text, mark)}
