"""Sticker filter on the case that once slipped through the gates: a corpus sticker over flat footage
(a smooth sky, a plain wall) while the camera moves. The ring around the sticker cannot show motion
there; the rest of the scene must, and a still camera must still find nothing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from infra.config_filters import ScoreConfig
from tasks.corpus.defects import Planted, _footage_params, apply_footage
from tasks.corpus.truth import Defect
from tasks.filters.frames import frames_from_arrays
from tasks.filters.sticker import StickerFilter, clip_overlays
from tests.test_filters import moving_scene

CFG = ScoreConfig()
FPS = 24.0
H, W, SIDE, BOX = 90, 160, 30, (60, 8, 30, 30)  # the sticker in the flat upper half, off the corners


def flat_sky_over_ground(camera_moves: bool, sticker_seed: int | None) -> np.ndarray:
    """A flat grey sky (rows 0-49) over textured ground that pans (or holds still), with the corpus's
    own sticker (star, heart or smiley, by seed) pasted into the sky on every frame."""
    ground = moving_scene(blur=1) if camera_moves else np.repeat(moving_scene(1, blur=1), 48, 0)
    frames = np.full_like(ground, 140)
    frames[:, 50:] = ground[:, 50:]
    if sticker_seed is not None:
        rng = np.random.default_rng(sticker_seed)
        planted = [Planted(Defect(kind="sticker", start_frame=0, end_frame=len(frames), box=BOX), 0,
                           _footage_params(rng, "sticker", BOX, W, H))]
        frames = np.stack([apply_footage(f.copy(), planted, t) for t, f in enumerate(frames)])
    return frames


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sticker_over_flat_footage_under_a_moving_camera_is_found(seed):
    out = StickerFilter(CFG.sticker)(frames_from_arrays(flat_sky_over_ground(True, seed), FPS, CFG.decode))
    # the shape's box, not the whole square: a star or heart does not fill it
    assert SIDE * SIDE * 0.5 / (H * W) <= out["score_sticker"] <= (SIDE + 4) ** 2 / (H * W)


def test_sticker_over_flat_footage_under_a_still_camera_is_not():
    """Same picture, camera still: every edge of the ground persists, so the sticker is as still as the
    scene and nothing tells it apart from a painted sign."""
    flt = StickerFilter(CFG.sticker)
    assert flt(frames_from_arrays(flat_sky_over_ground(False, 0), FPS, CFG.decode))["score_sticker"] == 0
    assert flt(frames_from_arrays(flat_sky_over_ground(True, None), FPS, CFG.decode))["score_sticker"] == 0


def test_a_shape_on_an_otherwise_flat_still_frame_says_nothing():
    """No steady edges outside the shape: no evidence of a moving camera, so no sticker."""
    frames = flat_sky_over_ground(True, 0)
    frames[:, 50:] = 140
    assert StickerFilter(CFG.sticker)(frames_from_arrays(frames, FPS, CFG.decode))["score_sticker"] == 0


def textured_pan_with(mark_at: tuple[int, int] | None, line: bool = False) -> np.ndarray:
    """A panning textured scene (a moving camera) with an opaque graphic mark (a ring with a bar, no
    text) pasted at ``mark_at`` (x, y of its 18x18 box), and optionally a subtitle-like row of blocks."""
    frames = moving_scene(blur=1)
    if mark_at is not None:
        x, y = mark_at
        for f in frames:
            cv2.circle(f, (x + 9, y + 9), 8, (250, 250, 250), -1)
            cv2.circle(f, (x + 9, y + 9), 8, (20, 20, 20), 2)
            cv2.rectangle(f, (x + 5, y + 7), (x + 13, y + 11), (20, 20, 20), -1)
    if line:
        for f in frames:
            for k in range(6):  # "words" of a line that starts in the corner zone
                cv2.rectangle(f, (6 + 22 * k, 70), (22 + 22 * k, 82), (250, 250, 250), -1)
                cv2.rectangle(f, (6 + 22 * k, 70), (22 + 22 * k, 82), (20, 20, 20), 1)
    return frames


def test_a_graphic_mark_in_a_corner_is_a_logo_not_a_sticker():
    """A mark without text (OCR reads nothing) inset in a corner of moving footage: a corner overlay,
    which the logo filter counts and the sticker filter leaves to it."""
    clip = frames_from_arrays(textured_pan_with((136, 68)), FPS, CFG.decode)
    overlays = clip_overlays(clip, CFG.sticker)
    assert [corner for _, corner in overlays] == [True]
    assert StickerFilter(CFG.sticker)(clip)["score_sticker"] == 0
    mid = frames_from_arrays(textured_pan_with((70, 36)), FPS, CFG.decode)  # the same mark mid-frame: a sticker
    assert clip_overlays(mid, CFG.sticker) and not any(c for _, c in clip_overlays(mid, CFG.sticker))


def test_corner_marks_exclude_line_starts_and_frame_edge_clutter():
    line = frames_from_arrays(textured_pan_with(None, line=True), FPS, CFG.decode)
    assert not any(corner for _, corner in clip_overlays(line, CFG.sticker))
    edge = frames_from_arrays(textured_pan_with((142, 72)), FPS, CFG.decode)  # cut by the frame's corner
    assert not any(corner for _, corner in clip_overlays(edge, CFG.sticker))


@pytest.mark.slow
def test_logo_filter_counts_a_graphic_corner_mark_with_rapidocr():
    from tasks.filters.logo import LogoFilter

    logo = LogoFilter(CFG.logo, CFG.text, sticker_cfg=CFG.sticker)
    assert logo(frames_from_arrays(textured_pan_with((136, 68)), FPS, CFG.decode))["score_logo"] > 0.59
    assert logo(frames_from_arrays(textured_pan_with(None), FPS, CFG.decode))["score_logo"] == 0
