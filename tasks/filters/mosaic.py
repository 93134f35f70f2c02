"""Mosaic / pixelation filter (report section 3.1: "mosaic" element filter).

A pixelated region is piecewise constant: brightness changes only in steps across cell edges, and
those edges are straight lines spanning the cells along both axes. Per tile and per axis:
- *step share*: the share of the tile's luma change (|difference| to the next pixel) carried by
  steps of at least ``step_min`` (a smooth gradient changes by small increments, its pixelated
  copy by steps). Luma, because 4:2:0 chroma is upsampled smoothly across cell edges;
- *lines*: columns (rows) where at least ``line_min`` of the tile's rows (columns) step; a mosaic
  has at least two and at most one per ``MIN_CELL`` columns, and they hold ``purity_min`` of the
  step pixels (noise steps everywhere; texture and curved object outlines scatter theirs).
A tile is a mosaic when both axes pass. Pixelation grids are not integer-periodic (a resize back
to the region size makes cells alternate between two widths), so no fixed period is assumed.
Tiles lie on two grids offset by half a tile. ``score_mosaic``: the largest share of the frame's
tiles flagged in one sample.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from infra.config_filters import MosaicConfig
from tasks.filters.frames import ClipFrames

MIN_CELL = 3  # pixels: finer pixelation is indistinguishable from texture at analysis size


def _tiles(a: np.ndarray, tile: int, off: int) -> np.ndarray:
    """(ty, tx, tile, tile) view of ``a`` cut into tiles starting at (off, off)."""
    a = a[off:, off:]
    ty, tx = a.shape[0] // tile, a.shape[1] // tile
    return a[: ty * tile, : tx * tile].reshape(ty, tile, tx, tile).transpose(0, 2, 1, 3)


def _axis_ok(diff: np.ndarray, cfg: MosaicConfig) -> np.ndarray:
    """diff (ty, tx, rows, cols) along cols; True where steps form >= 2 full lines holding the energy."""
    step = diff >= cfg.step_min
    total = diff.sum(axis=(2, 3)) + 1e-9
    step_share = (diff * step).sum(axis=(2, 3)) / total
    coverage = step.mean(axis=2)  # per column: share of rows stepping there
    lines = coverage >= cfg.line_min
    on_lines = (step.sum(axis=2) * lines).sum(axis=-1) / (step.sum(axis=(2, 3)) + 1e-9)
    count = lines.sum(axis=-1)
    sparse = count <= diff.shape[-1] / MIN_CELL  # cell edges, not every column
    return (step_share >= cfg.purity_min) & (count >= 2) & sparse & (on_lines >= cfg.purity_min)


def mosaic_share(grey: np.ndarray, cfg: MosaicConfig) -> float:
    """Share of tiles (over both grids) that are pixelated in one grey frame."""
    img = grey.astype(np.int16)
    dx = np.zeros_like(img)
    dy = np.zeros_like(img)
    dx[:, :-1] = np.abs(img[:, 1:] - img[:, :-1])  # edge between x and x+1 sits at x
    dy[:-1, :] = np.abs(img[1:, :] - img[:-1, :])
    flagged = total = 0
    for off in (0, cfg.tile // 2):
        tx, ty = _tiles(dx, cfg.tile, off), _tiles(dy, cfg.tile, off)
        if tx.size == 0:
            continue
        # Trim the tile's last column/row: its differences reach into the next tile.
        ok = _axis_ok(tx[..., :-1], cfg) & _axis_ok(ty[..., :-1, :].swapaxes(2, 3), cfg)
        flagged += int(ok.sum())
        total += ok.size
    return flagged / total if total else 0.0


class MosaicFilter:
    name = "mosaic"
    columns = {"score_mosaic": pa.float64()}

    def __init__(self, cfg: MosaicConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        grey = clip.grey_samples
        return {"score_mosaic": max(mosaic_share(grey[i], self.cfg) for i in clip.pick(self.cfg.frames))}
