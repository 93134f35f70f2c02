"""Sticker filter on the case that once slipped through the gates: a corpus sticker over flat footage
(a smooth sky, a plain wall) while the camera moves. The ring around the sticker cannot show motion
there; the rest of the scene must, and a still camera must still find nothing."""

from __future__ import annotations

import numpy as np
import pytest

from infra.config_filters import ScoreConfig
from tasks.corpus.lib.defects import Planted, _footage_params
from tasks.corpus.lib.drawing import apply_footage
from tasks.corpus.lib.truth import Defect
from tasks.curate.filters.frames import frames_from_arrays
from tasks.curate.filters.sticker import StickerFilter
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
