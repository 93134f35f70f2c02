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
4. a mosaic over content that changes along one axis only (vertical stripes, a standing figure)
   steps on that axis alone: a regular, bounded comb of lines over content flat across it also
   counts (:func:`comb_windows`).

5. a mosaic that moves (drifts over the picture, tracks a moving region, is re-pixelated every frame
   on a grid anchored to its own box) has no fixed lattice: over time its edges smear like natural
   ones. Each sample is then judged alone (steps 1-3 on one sample, phase and cell size free, since
   every window finds its own lines), with a lower step bound (``frame_step_min``): on real footage a
   censoring mosaic mostly sits over smooth content, where neighbouring cells differ by 2-4 luma
   levels and the codec softens even that (2 also finds 8-bit contour rows of a gradient crossing
   flat stripes on the synthetic corpus, 3 does not). One sample has no time to smear natural edges away, so
   the area must hold in most samples: the clip's per-sample area is the ``frame_quantile`` over
   samples. The one-axis comb (step 4) stays a whole-clip test: a single sample's stripes are too
   common.

``score_mosaic``: the share of the frame covered by the largest connected pixelated area (each
pixelated window position counts its whole window), the larger of the whole-clip and the per-sample
measure. One stray window covers ``window^2`` pixels; the profiles' thresholds sit above that.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

from infra.config_filters import MosaicConfig
from tasks.curate.filters.frames import ClipFrames

CODEC_BLOCK = 8  # H.264/MPEG transform block, in coded pixels
MIN_CELL = 3  # pixels: finer pixelation is indistinguishable from texture at analysis size


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


def codec_period(scale: float) -> int | None:
    """The codec block grid's period in analysis pixels at ``scale`` (analysis / source pixels); None
    where it does not land on whole pixels or is finer than a cell can be."""
    period = CODEC_BLOCK * scale
    if abs(period - round(period)) > 1e-6 or round(period) < MIN_CELL:
        return None
    return round(period)


def codec_grid(shape: tuple[int, int], scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Masks of the steps on the codec block grid (column edges, row edges); None as :func:`codec_period`."""
    period = codec_period(scale)
    if period is None:
        return None
    cols, rows = np.zeros(shape, bool), np.zeros(shape, bool)
    cols[:, period - 1::period] = True
    rows[period - 1::period, :] = True
    return cols, rows


def _window_sum(a: np.ndarray, window: int) -> np.ndarray:
    return cv2.boxFilter(a.astype(np.float32), -1, (window, window), normalize=False, borderType=cv2.BORDER_CONSTANT)


def grid_windows(mx, my, vx, hy, cfg: MosaicConfig, scale: float) -> np.ndarray:
    """(H, W) bool: window centres holding a lattice on both axes (module docstring, step 3)."""
    area = cfg.window * cfg.window
    nv, nh = _window_sum(vx, cfg.window), _window_sum(hy, cfg.window)
    on = (_window_sum(mx * vx, cfg.window) + _window_sum(my * hy, cfg.window)) / np.maximum(nv + nh, 1)
    off = (_window_sum(mx * ~vx, cfg.window) + _window_sum(my * ~hy, cfg.window)) / np.maximum(2 * area - nv - nh, 1)
    good = (nv >= cfg.line_density * area) & (nh >= cfg.line_density * area) & (off <= cfg.quiet_ratio * on)
    grid = codec_grid(vx.shape, scale)
    if grid is not None:
        cols, rows = grid
        codec = ((_window_sum(vx & cols, cfg.window) >= cfg.codec_share * nv)
                 & (_window_sum(hy & rows, cfg.window) >= cfg.codec_share * nh))
        good &= ~codec
    return good


def comb_windows(m: np.ndarray, lines: np.ndarray, across: np.ndarray, cfg: MosaicConfig, scale: float) -> np.ndarray:
    """(H, W) bool: window centres (every ``comb_stride`` px, each marking its stride cell) where a
    mosaic shows on one axis only: content that changes along x alone (vertical stripes, a standing
    figure) gives cells that differ left-right but not up-down, so only the column edges step.
    ``m``: steps along x; ``lines``: their vertical lattice lines; ``across``: steps along y.
    One axis is weaker evidence than two, so the comb must be regular (at least ``comb_lines``
    columns, spacings equal within a pixel), flat across (mean step along y <= ``comb_flat``),
    not the codec grid, and bounded: a mosaic's columns end at its rectangle, stripes of the scene
    run on (median column coverage of the frame's height <= ``comb_extent``)."""
    half, stride, area = cfg.window // 2, cfg.comb_stride, cfg.window * cfg.window
    n = _window_sum(lines, cfg.window)
    on = _window_sum(m * lines, cfg.window) / np.maximum(n, 1)
    off = _window_sum(m * ~lines, cfg.window) / np.maximum(area - n, 1)
    candidate = ((n >= cfg.line_density / 2 * area) & (off <= cfg.quiet_ratio * on)
                 & (_window_sum(across, cfg.window) / area <= cfg.comb_flat))
    period = codec_period(scale)
    height = lines.shape[0]
    coverage = lines.mean(axis=0)  # per column: share of the frame's rows on a line
    out = np.zeros(lines.shape, bool)
    for y in range(half, height - half + 1, stride):
        for x in np.nonzero(candidate[y, half:lines.shape[1] - half + 1:stride])[0] * stride + half:
            cols = np.nonzero(lines[y - half:y + half, x - half:x + half].mean(axis=0) >= cfg.run_share)[0] + x - half
            if len(cols) < cfg.comb_lines:
                continue
            gaps = np.diff(cols)
            if gaps.min() < MIN_CELL or gaps.max() - gaps.min() > 1 or np.median(coverage[cols]) > cfg.comb_extent:
                continue
            if period and np.mean(cols % period == period - 1) >= cfg.codec_share:
                continue
            out[y - stride // 2:y - stride // 2 + stride, x - stride // 2:x - stride // 2 + stride] = True
    return out


def pixelated_windows(luma: np.ndarray, cfg: MosaicConfig, scale: float = 1.0, comb: bool = True) -> np.ndarray:
    """(H, W) bool: centres of the windows judged pixelated (module docstring, steps 1-3; 4 with ``comb``)."""
    mx, my = step_quantile(luma, cfg.quantile)
    vx = vertical_lines(mx, cfg)
    hy = vertical_lines(my.T, cfg).T
    good = grid_windows(mx, my, vx, hy, cfg, scale)
    if comb and cfg.comb_lines:
        good |= comb_windows(mx, vx, my, cfg, scale)
        good |= comb_windows(my.T, hy.T, mx.T, cfg, scale).T
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


def per_sample_regions(luma: np.ndarray, cfg: MosaicConfig, scale: float = 1.0) -> list[np.ndarray]:
    """:func:`mosaic_region` of each sample judged alone (module docstring, step 5)."""
    one = cfg.model_copy(update={"step_min": cfg.frame_step_min})
    return [mosaic_region(pixelated_windows(luma[k:k + 1], one, scale, comb=False), cfg.window) for k in range(len(luma))]


class MosaicFilter:
    name = "mosaic"
    columns = {"score_mosaic": pa.float64()}

    def __init__(self, cfg: MosaicConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        luma = clip.luma[clip.pick(self.cfg.frames)]
        scale = luma.shape[2] / clip.width if clip.width else 1.0
        region = mosaic_region(pixelated_windows(luma, self.cfg, scale), self.cfg.window)
        score = float(region.mean())
        if len(luma) > 1:
            regions = per_sample_regions(luma, self.cfg, scale)
            moving = float(np.quantile([r.mean() for r in regions], self.cfg.frame_quantile))
            if moving > score:  # where a moving mosaic went: the union of its per-sample regions
                score, region = moving, np.logical_or.reduce(regions)
        clip._cache["mosaic_region"] = region  # an overlay the copy detector leaves out (dedup.py)
        return {"score_mosaic": score}
