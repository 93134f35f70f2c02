"""Logo filter (report section 3.1: "logo", a persistent mark in a corner).

A channel mark stays in one corner, at one place, while the picture changes. ``score_logo``: the
largest share of OCR'd samples showing a line wholly inside a corner at the place of one sighting
(IoU >= ``SAME_PLACE``). The lines come from the text filter's single OCR pass; a corner line
seen once (a passing sign) scores low, a mark present throughout scores 1.
"""

from __future__ import annotations

import pyarrow as pa

from infra.config_filters import LogoConfig, TextConfig
from tasks.curate.filters.frames import ClipFrames
from tasks.curate.filters.ocr import in_picture_corner, make_reader, picture_share, read_clip

SAME_PLACE = 0.5


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


class LogoFilter:
    name = "logo"
    columns = {"score_logo": pa.float64()}

    def __init__(self, cfg: LogoConfig, text_cfg: TextConfig, reader=None):
        self.cfg, self.text_cfg = cfg, text_cfg
        self.reader = reader or make_reader(text_cfg)

    def __call__(self, clip: ClipFrames) -> dict:
        pages = read_clip(clip, self.reader, self.text_cfg)
        return {"score_logo": corner_persistence(pages, self.text_cfg.corner_zone, picture_share(clip))}
