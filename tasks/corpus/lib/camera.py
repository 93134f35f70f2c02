"""Camera motion on the report's 6DoF scheme (section 3.2: each axis +/-/0 plus a speed class).

A shot's camera follows a constant-rate path through a pose (tx, ty, tz, roll, pitch, yaw). It is
rendered as one homography per frame mapping frame pixels to the shot's (tileable) background
canvas: translations shift the canvas, tz dollies in (zoom about the centre), roll rotates about the
optical axis and pitch/yaw rotate the viewing ray (K R K^-1, exact for a distant scene). The label's
speed is *measured* from these homographies, so truth is what was rendered, not what was asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tasks.corpus.lib.truth import CameraMotion, Speed

AXES = ("tx", "ty", "tz", "roll", "pitch", "yaw")
# Report section 3.2 speed classes, as a fraction of the frame diagonal per second.
SLOW_BELOW, FAST_ABOVE = 0.05, 0.20
# Targets sit well inside each class so the measured value lands in the class that was asked for.
SPEED_BANDS: dict[str, tuple[float, float]] = {"slow": (0.015, 0.04), "medium": (0.07, 0.17), "fast": (0.25, 0.45)}
SPEED_WEIGHTS = {"static": 0.2, "slow": 0.3, "medium": 0.35, "fast": 0.15}
AXIS_WEIGHTS = {"tx": 0.22, "ty": 0.08, "tz": 0.2, "roll": 0.08, "pitch": 0.12, "yaw": 0.3}
# Largest total excursion over a shot: keeps rotations far from 90 degrees (where a homography of a
# plane degenerates) and zooms from magnifying the canvas into mush. Translations wrap, so no limit.
EXCURSION_LIMITS = {"tz": math.log(2.0), "roll": math.radians(60), "pitch": math.radians(50), "yaw": math.radians(50)}
HORIZONTAL_FOV = math.radians(60)
FAST_PAN_BAND = (0.5, 0.8)  # hard-negative whip pans: far beyond the "fast" threshold


@dataclass(frozen=True)
class CameraPath:
    width: int
    height: int
    canvas_size: tuple[int, int]  # (width, height) of the canvas the frame samples from
    fps: float
    span: int  # content frames the path is centred on
    rates: tuple[float, ...]  # per second, in AXES order: tx/ty px, tz ln-zoom, roll/pitch/yaw rad

    @property
    def focal(self) -> float:
        return (self.width / 2) / math.tan(HORIZONTAL_FOV / 2)

    def homography(self, t: float, parallax: float = 1.0) -> np.ndarray:
        """Frame pixel -> canvas pixel at content frame ``t``. ``parallax`` > 1 moves a nearer layer
        further under translation (subjects), which is what tells a dolly from a pan."""
        seconds = (t - (self.span - 1) / 2) / self.fps  # centred: rotations swing +-limit/2
        tx, ty, tz, roll, pitch, yaw = (rate * seconds for rate in self.rates)
        f = self.focal
        k = np.diag([f, f, 1.0])
        look = k @ _rot_y(yaw) @ _rot_x(pitch) @ np.linalg.inv(k)
        cw, ch = self.canvas_size
        zoom = math.exp(tz)
        place = _translate(cw / 2 + parallax * tx, ch / 2 + parallax * ty) @ np.diag([1 / zoom, 1 / zoom, 1.0])
        return place @ _rot_z(roll) @ look @ _translate(-self.width / 2, -self.height / 2)

    def is_static(self) -> bool:
        return not any(self.rates)


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0, x], [0, 1, y], [0, 0, 1]])


def _rot_z(a: float) -> np.ndarray:
    # y points down, so a positive angle turns the sampling window clockwise (roll +).
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)  # optical axis (0,0,1) -> (0, sin, cos): tilt down for a > 0
    return np.array([[1.0, 0, 0], [0, c, s], [0, -s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)  # optical axis -> (sin, 0, cos): pan right for a > 0
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _frame_grid(width: int, height: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.linspace(0.05, 0.95, 7) * width, np.linspace(0.05, 0.95, 5) * height)
    return np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])


def measure_speed(cam: CameraPath) -> float:
    """Mean per-second image-plane displacement of the background, as a fraction of the diagonal:
    where a scene point seen at pixel p in frame t appears in frame t+1, averaged over a grid."""
    if cam.is_static() or cam.span < 2:
        return 0.0
    grid = _frame_grid(cam.width, cam.height)
    steps = np.unique(np.linspace(0, cam.span - 2, min(cam.span - 1, 32)).round().astype(int))
    moves = []
    for t in steps:
        seen = np.linalg.inv(cam.homography(t + 1)) @ cam.homography(t) @ grid
        moves.append(np.hypot(*(seen[:2] / seen[2] - grid[:2])).mean())
    return float(np.mean(moves)) * cam.fps / math.hypot(cam.width, cam.height)


def speed_class(fraction: float) -> Speed:
    if fraction == 0:
        return "static"
    return "slow" if fraction < SLOW_BELOW else "medium" if fraction <= FAST_ABOVE else "fast"


def _rate_for(axis: str, fraction: float, width: int, height: int) -> float:
    """Axis rate that moves the image by ``fraction`` of the diagonal per second (first order)."""
    diag = math.hypot(width, height)
    if axis in ("tx", "ty"):
        return fraction * diag
    if axis in ("pitch", "yaw"):
        return fraction * diag / ((width / 2) / math.tan(HORIZONTAL_FOV / 2))
    mean_radius = np.hypot(*(_frame_grid(width, height)[:2] - [[width / 2], [height / 2]])).mean() / diag
    return fraction / mean_radius  # roll and tz move a pixel in proportion to its distance from centre


def plan_camera(
    rng: np.random.Generator, width: int, height: int, canvas_size: tuple[int, int], fps: float, span: int,
    fast_pan: bool = False,
) -> CameraPath:
    """Draw a speed class, then one axis (85%) or two (15%) whose excursion fits the shot."""
    seconds = span / fps
    rates = dict.fromkeys(AXES, 0.0)
    if fast_pan:
        axis = "tx" if rng.random() < 0.75 else "ty"
        rates[axis] = rng.choice([-1, 1]) * _rate_for(axis, rng.uniform(*FAST_PAN_BAND), width, height)
    else:
        speed = rng.choice(list(SPEED_WEIGHTS), p=list(SPEED_WEIGHTS.values()))
        if speed != "static":
            n_axes = 1 if rng.random() < 0.85 else 2
            fraction = rng.uniform(*SPEED_BANDS[speed]) / math.sqrt(n_axes)
            feasible = [
                a for a in AXES
                if abs(_rate_for(a, fraction, width, height)) * seconds <= EXCURSION_LIMITS.get(a, math.inf)
            ]
            weights = np.array([AXIS_WEIGHTS[a] for a in feasible])
            for axis in rng.choice(feasible, size=min(n_axes, len(feasible)), replace=False, p=weights / weights.sum()):
                rates[axis] = rng.choice([-1, 1]) * _rate_for(axis, fraction, width, height)
    return CameraPath(width, height, canvas_size, fps, span, tuple(float(rates[a]) for a in AXES))


def camera_truth(cam: CameraPath) -> CameraMotion:
    fraction = round(measure_speed(cam), 4)
    signs = {a: "+" if r > 0 else "-" if r < 0 else "0" for a, r in zip(AXES, cam.rates, strict=True)}
    return CameraMotion(**signs, speed=speed_class(fraction), speed_fraction_per_s=fraction)
