"""Camera-motion sub-expert on rendered camera paths with known 6DoF truth (corpus conventions)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from models.camera_motion import AXES, MotionParams, estimate_motion, speed_class
from tasks.corpus.lib.camera import CameraPath, _rate_for, camera_truth, measure_speed

W, H, FPS, N = 192, 108, 24.0, 40


@pytest.fixture(scope="module")
def canvas() -> np.ndarray:
    rng = np.random.default_rng(3)
    base = cv2.resize(rng.integers(0, 255, (2 * H // 4, 2 * W // 4), dtype=np.uint8), (2 * W, 2 * H),
                      interpolation=cv2.INTER_CUBIC)
    for _ in range(40):  # shapes give corners and edges at every scale
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(base, tuple(int(v) for v in rng.integers(0, 2 * W, 2) % (2 * W, 2 * H)),
                   int(rng.integers(4, 20)), c[0], -1)
    return cv2.cvtColor(base, cv2.COLOR_GRAY2RGB)


def render(canvas, cam: CameraPath, jitter: np.ndarray | None = None) -> list[np.ndarray]:
    frames = []
    for t in range(cam.span):
        h = cam.homography(t)
        if jitter is not None:
            h = h @ np.array([[1.0, 0, jitter[t, 0]], [0, 1, jitter[t, 1]], [0, 0, 1]])
        frames.append(cv2.warpPerspective(canvas, h, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                          borderMode=cv2.BORDER_WRAP))
    return frames


def path(**fractions: float) -> CameraPath:
    """A camera moving each named axis at a signed fraction of the diagonal per second."""
    rates = [math.copysign(_rate_for(a, abs(fractions[a]), W, H), fractions[a]) if a in fractions else 0.0 for a in AXES]
    return CameraPath(W, H, (2 * W, 2 * H), FPS, N, tuple(rates))


def test_static_camera_is_static(canvas):
    est = estimate_motion(render(canvas, path()), FPS)
    assert est.speed == "static" and set(est.axes.values()) == {"0"}
    assert not est.handheld and not est.abrupt_change


@pytest.mark.parametrize("axis,fraction", [("tx", 0.12), ("ty", -0.1), ("tz", 0.1), ("roll", -0.12),
                                           ("pitch", 0.12), ("yaw", -0.15), ("tx", -0.3), ("yaw", 0.03)])
def test_single_axis_direction_and_speed(canvas, axis, fraction):
    cam = path(**{axis: fraction})
    truth = camera_truth(cam)
    est = estimate_motion(render(canvas, cam), FPS)
    assert est.axes == {a: getattr(truth, a) for a in AXES}
    assert est.speed == truth.speed
    # The unit is the corpus truth's: within 15% of the rendered path's measured speed.
    assert est.speed_fraction_per_s == pytest.approx(measure_speed(cam), rel=0.15)


def test_two_axes(canvas):
    cam = path(tx=0.08, ty=-0.08)
    est = estimate_motion(render(canvas, cam), FPS)
    assert {a: v for a, v in est.axes.items() if v != "0"} == {"tx": "+", "ty": "-"}


def test_handheld_shake_flagged_and_smooth_pan_not(canvas):
    rng = np.random.default_rng(0)
    shaky = estimate_motion(render(canvas, path(), jitter=rng.normal(0, 1.5, (N, 2))), FPS)
    smooth = estimate_motion(render(canvas, path(yaw=0.1)), FPS)
    assert shaky.handheld and not smooth.handheld


def test_abrupt_direction_change_flagged(canvas):
    right = render(canvas, path(tx=0.15))
    est = estimate_motion(right[: N // 2] + right[N // 2 - 2::-1], FPS)  # trucks right, then back left
    assert est.abrupt_change


def test_speed_classes_follow_the_report():
    p = MotionParams()
    assert [speed_class(v, p.static_below) for v in (0.0, 0.03, 0.05, 0.2, 0.21)] == [
        "static", "slow", "medium", "medium", "fast"]


def test_config_mirrors_params():
    import dataclasses

    from infra.config_caption import CameraMotionConfig

    assert MotionParams(**CameraMotionConfig().model_dump()) == MotionParams()
    assert set(CameraMotionConfig.model_fields) == {f.name for f in dataclasses.fields(MotionParams)}
