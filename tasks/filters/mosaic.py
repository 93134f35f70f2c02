"""Mosaic / pixelation filter (report section 3.1: "mosaic" element filter).

A censoring mosaic replaces a rectangle of the picture by cells of one colour each, and it stays put
while the footage under it moves. So, over ALL of the clip's luma samples at once:

1. ``m_x``: per pixel, a high quantile over time of |luma(x+1) - luma(x)| (``m_y`` alike). A cell edge
   steps in most samples (the cells on either side show different content); a cell interior never
   does, apart from codec ringing. Natural edges move with the content and smear over time.
2. *lattice lines*: pixels where ``m_x`` is a sharp one-pixel ridge (at least ``step_min`` and
   ``ridge_ratio`` times its two neighbours on either side) that continues vertically over most of
   ``line_run`` rows (horizontal lines of ``m_y`` alike). Nearest-neighbour cells have hard edges.
3. a ``window`` is pixelated when both axes hold lattice lines at a density of at least
   ``line_density`` (cells up to ~1/line_density pixels), the change off the lines is at most
   ``quiet_ratio`` of the change on them (flat interiors), and its lines are not the codec's block
   grid: blocks on the 8x8 grid from the frame's corner in both axes are compression blockiness, which
   is the IQA filter's concern (``score_blockiness``), not a mosaic.

``score_mosaic``: the share of the frame covered by the largest connected pixelated area (each
pixelated window position counts its whole window). One stray window covers ``window^2`` pixels;
the profiles' thresholds sit above that.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

from infra.config_filters import MosaicConfig
from tasks.filters.frames import ClipFrames

CODEC_BLOCK = 8  # H.264/MPEG transform block, in coded pixels


def step_quantile(luma: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """(m_x, m_y), both (H, W) float32: the ``q`` quantile over samples of the absolute luma step to
    the next pixel right (down). The step between x and x+1 is stored at x; the last column (row) is 0."""
    y = luma.astype(np.int16)
    dx, dy = np.abs(np.diff(y, axis=2)), np.abs(np.diff(y, axis=1))
    mx = np.quantile(dx, q, axis=0, method="lower") if len(y) > 1 else dx[0]
    my = np.quantile(dy, q, axis=0, method="lower") if len(y) > 1 else dy[0]
    return (np.pad(mx, ((0, 0), (0, 1))).astype(np.float32), np.pad(my, ((0, 1), (0, 0))).astype(np.float32))


def vertical_lines(m: np.ndarray, cfg: MosaicConfig) -> np.ndarray:
    """Pixels of ``m`` (steps along x) on a sharp ridge that runs vertically: a lattice's column edges."""
    w = m.shape[1]
    p = np.pad(m, ((0, 0), (2, 2)), mode="edge")
    around = np.maximum.reduce([p[:, 0:w], p[:, 1:w + 1], p[:, 3:w + 3], p[:, 4:w + 4]])
    ridge = (m >= cfg.step_min) & (m >= cfg.ridge_ratio * around)
    run = cv2.boxFilter(ridge.astype(np.float32), -1, (1, cfg.line_run), borderType=cv2.BORDER_CONSTANT)
    return ridge & (run >= cfg.run_share)


def codec_grid(shape: tuple[int, int], scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Masks of the steps on the codec block grid (column edges, row edges) at analysis ``scale``
    (analysis / source pixels); None where the grid does not land on whole analysis pixels."""
    period = CODEC_BLOCK * scale
    if abs(period - round(period)) > 1e-6 or round(period) < 3:
        return None
    period = round(period)
    cols, rows = np.zeros(shape, bool), np.zeros(shape, bool)
    cols[:, period - 1::period] = True
    rows[period - 1::period, :] = True
    return cols, rows


def pixelated_windows(luma: np.ndarray, cfg: MosaicConfig, scale: float = 1.0) -> np.ndarray:
    """(H, W) bool: centres of the windows judged pixelated (module docstring, steps 1-3)."""
    mx, my = step_quantile(luma, cfg.quantile)
    vx = vertical_lines(mx, cfg)
    hy = vertical_lines(my.T, cfg).T

    def window_sum(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a.astype(np.float32), -1, (cfg.window, cfg.window), normalize=False,
                             borderType=cv2.BORDER_CONSTANT)

    area = cfg.window * cfg.window
    nv, nh = window_sum(vx), window_sum(hy)
    on = (window_sum(mx * vx) + window_sum(my * hy)) / np.maximum(nv + nh, 1)
    off = (window_sum(mx * ~vx) + window_sum(my * ~hy)) / np.maximum(2 * area - nv - nh, 1)
    good = (nv >= cfg.line_density * area) & (nh >= cfg.line_density * area) & (off <= cfg.quiet_ratio * on)
    grid = codec_grid(vx.shape, scale)
    if grid is not None:
        cols, rows = grid
        codec = (window_sum(vx & cols) >= cfg.codec_share * nv) & (window_sum(hy & rows) >= cfg.codec_share * nh)
        good &= ~codec
    return good


def mosaic_region(good: np.ndarray, window: int) -> np.ndarray:
    """(H, W) bool: the pixels of the largest connected group of pixelated window centres, each
    counting its whole window."""
    if not good.any():
        return np.zeros(good.shape, bool)
    count, labels = cv2.connectedComponents(good.astype(np.uint8), connectivity=8)
    sizes = np.bincount(labels.ravel(), minlength=count)[1:]
    largest = (labels == 1 + int(sizes.argmax())).astype(np.uint8)
    return cv2.dilate(largest, np.ones((window, window), np.uint8)).astype(bool)


def mosaic_area(good: np.ndarray, window: int) -> float:
    """Share of the frame covered by :func:`mosaic_region`."""
    return float(mosaic_region(good, window).mean())


class MosaicFilter:
    name = "mosaic"
    columns = {"score_mosaic": pa.float64()}

    def __init__(self, cfg: MosaicConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        luma = clip.luma[clip.pick(self.cfg.frames)]
        scale = luma.shape[2] / clip.width if clip.width else 1.0
        region = mosaic_region(pixelated_windows(luma, self.cfg, scale), self.cfg.window)
        clip._cache["mosaic_region"] = region  # an overlay the copy detector leaves out (dedup.py)
        return {"score_mosaic": float(region.mean())}
