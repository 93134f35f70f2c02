"""Letterbox / pillarbox filter (report section 3.1: "black borders", cropped for the strict profile).

A row (column) is part of a bar when at least ``DARK_SHARE`` of its pixels are darker than
``luma_max`` in every non-black sample; bars grow inwards from the frame edges. Burned-in
subtitles often sit on the bottom bar, hence a share rather than "every pixel": a long line of
white letters with their outline lights up to a third of a bar's row, and the crop must still reach
the picture (it left 5-11 px of bar in it at 0.75; 0.5 lets dark content with black patches
in as bars). A bar is also black, not merely dark: its median
is at most ``BAR_BLACK`` in every sample. Bars are encoded black (video level 16, 0 once decoded to
full range), while a dark picture's edges (night sky, a vignette, a dark wallpaper) sit at 14-20 on
real footage and were taken for bars. Output: the share of
the frame outside the picture (``score_border``) and the crop box of the picture, in clip pixels.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from infra.config_filters import BorderConfig
from tasks.curate.filters.black import black_frames
from tasks.curate.filters.frames import ClipFrames

DARK_SHARE = 0.65
BAR_LUMA = 20.0  # BorderConfig.luma_max's default: the bar level other filters use
BAR_BLACK = 8.0  # a bar line's median luma at most this (see the module docstring)


def _edge_run(bar: np.ndarray) -> int:
    """How many leading entries of ``bar`` are True."""
    return int(np.argmin(bar)) if not bar.all() else len(bar)


def _bar_lines(grey: np.ndarray, dark: np.ndarray, axis: int) -> np.ndarray:
    """Per line along ``axis`` (2: rows, 1: columns) of (S, H, W): a bar line in every sample."""
    return ((dark.mean(axis=axis) >= DARK_SHARE) & (np.median(grey, axis=axis) <= BAR_BLACK)).all(axis=0)


def picture_box(grey: np.ndarray, luma_max: float, min_bar: float) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the picture inside bars, in the samples' pixels; grey is (S, H, W). Columns are
    judged between the letterbox bars found first (rows between pillarbox bars, after): a column of
    a letterboxed frame holds both bars' black, which counts towards a dark share of its own."""
    _, h, w = grey.shape
    dark = grey < luma_max
    top, bottom, left, right = 0, 0, 0, 0
    for _ in range(2):
        rows = _bar_lines(grey[:, :, left:w - right], dark[:, :, left:w - right], 2)
        top, bottom = _edge_run(rows), _edge_run(rows[::-1])
        if top + bottom >= h:  # all dark: no picture to frame
            return 0, 0, w, h
        cols = _bar_lines(grey[:, top:h - bottom], dark[:, top:h - bottom], 1)
        left, right = _edge_run(cols), _edge_run(cols[::-1])
        if left + right >= w:
            return 0, 0, w, h
    top, bottom = (t if t >= min_bar * h else 0 for t in (top, bottom))
    left, right = (t if t >= min_bar * w else 0 for t in (left, right))
    return left, top, w - left - right, h - top - bottom


def clip_picture_box(clip: ClipFrames, luma_max: float = BAR_LUMA, min_bar: float = 0.02) -> tuple[int, int, int, int]:
    """:func:`picture_box` of a clip's lit samples (the whole frame when all are black), computed once
    per decode and shared: the border filter's crop, the picture corners of the text and logo filters,
    the picture the copy detector embeds."""
    key = ("picture_box", luma_max, min_bar)
    if key not in clip._cache:
        grey = clip.grey_samples
        lit = grey[~black_frames(grey, luma_max)]
        clip._cache[key] = (picture_box(lit, luma_max, min_bar) if len(lit)
                            else (0, 0, grey.shape[2], grey.shape[1]))
    return clip._cache[key]


class BorderFilter:
    name = "border"
    columns = {"score_border": pa.float64(), "border_crop": pa.list_(pa.int32())}

    def __init__(self, cfg: BorderConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        x, y, w, h = clip_picture_box(clip, self.cfg.luma_max, self.cfg.min_bar)  # all black: the whole frame
        sh, sw = clip.samples.shape[1:3]
        sx, sy = clip.width / sw, clip.height / sh
        box = [round(x * sx), round(y * sy), round(w * sx), round(h * sy)]
        return {"score_border": 1.0 - (w * h) / (sw * sh), "border_crop": box}
