"""Filters on what real footage brings and the synthetic corpus did not: mosaics that move with their
own grid, channel marks that are not text, dark picture edges that are not bars (each test can fail)."""

from __future__ import annotations

import cv2
import numpy as np

from infra.config_filters import ScoreConfig, StickerConfig
from tasks.corpus.lib.defects import pixelate
from tasks.curate.filters.border import BorderFilter
from tasks.curate.filters.frames import frames_from_arrays
from tasks.curate.filters.logo import corner_mark
from tasks.curate.filters.mosaic import MosaicFilter

CFG = ScoreConfig()
FPS = 24.0


def scene(n: int = 48, h: int = 96, w: int = 160, seed: int = 0, speed: int = 2, blur: float = 2) -> np.ndarray:
    """Textured background panning right, so every frame differs from the last."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 255, (h, w * 3, 3), dtype=np.uint8), (0, 0), blur)
    base = cv2.normalize(base, None, 30, 230, cv2.NORM_MINMAX)
    return np.stack([base[:, i * speed: i * speed + w] for i in range(n)])


def mosaic_score(frames: np.ndarray, cfg=CFG.mosaic) -> float:
    return MosaicFilter(cfg)(frames_from_arrays(frames, FPS, CFG.decode))["score_mosaic"]


def test_a_drifting_mosaic_on_its_own_grid_is_found_by_the_per_sample_pass():
    frames = scene()
    bw, bh, cell = 60, 44, 8  # 6 frames between samples: the grid moves 6 and 3 px, never a whole cell
    for i, f in enumerate(frames):  # drifts 1 px a frame right and down, re-pixelated on a grid anchored at its box
        x, y = 20 + i, 10 + i // 2
        f[y:y + bh, x:x + bw] = pixelate(f[y:y + bh, x:x + bw], cell)
    whole_clip_only = CFG.mosaic.model_copy(update={"frame_step_min": 255})  # per-sample pass off
    assert mosaic_score(frames, whole_clip_only) < 0.03  # no fixed lattice: the whole-clip pass alone misses it
    score = mosaic_score(frames)
    assert 0.03 < score < 0.6  # the strict bound; about the box grown by a window, not the frame
    assert mosaic_score(scene()) == 0  # the clean footage under it


def test_dark_picture_edges_are_not_bars_and_black_bars_with_a_subtitle_are_cropped_exactly():
    frames = scene(h=90)
    dark = frames.copy()
    dark[:, :, :14] = np.clip(dark[:, :, :14] // 12 + 14, 0, 255)  # a vignette: luma ~14-33, never black
    assert BorderFilter(CFG.border)(frames_from_arrays(dark, FPS, CFG.decode))["score_border"] == 0
    bars = frames.copy()
    bars[:, :10], bars[:, -10:] = 0, 0
    bars[:, -8:-3, 50:100] = 255  # a subtitle line over the bottom bar
    out = BorderFilter(CFG.border)(frames_from_arrays(bars, FPS, CFG.decode))
    assert out["border_crop"] == [0, 10, 160, 70]


def mark(size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A graphic channel mark without letters (two strong-coloured discs) and its alpha."""
    img = np.zeros((size, size, 3), np.uint8)
    cv2.circle(img, (size // 2, size // 2), size // 2 - 1, (230, 40, 40), -1)
    cv2.circle(img, (size // 2, size // 2), size // 4, (250, 240, 60), -1)
    alpha = (img.max(axis=2) > 0).astype(np.float32)[..., None] * 0.85  # broadcast marks let some picture through
    return img, alpha


def with_mark(frames: np.ndarray, x: int, y: int) -> np.ndarray:
    img, alpha = mark()
    out = frames.copy()
    h, w = img.shape[:2]
    roi = out[:, y:y + h, x:x + w].astype(np.float32)
    out[:, y:y + h, x:x + w] = (roi * (1 - alpha) + img * alpha + 0.5).astype(np.uint8)
    return out


def mark_score(frames: np.ndarray) -> float:
    clip = frames_from_arrays(frames, FPS, CFG.decode)
    h, w = clip.luma.shape[1:]
    return corner_mark(clip.luma, (0, 0, w, h), CFG.text.corner_zone, StickerConfig())


def test_a_graphic_mark_in_a_corner_over_moving_footage_scores_as_a_logo():
    frames = scene()
    assert mark_score(with_mark(frames, 140, 4)) > 0.9  # top right corner, there throughout
    assert mark_score(with_mark(frames, 72, 40)) == 0  # the middle of the picture: a sticker's place
    assert mark_score(frames) == 0
    still = np.repeat(frames[:1], 48, axis=0)  # a still picture: nothing tells a mark from the scene
    assert mark_score(with_mark(still, 140, 4)) == 0
