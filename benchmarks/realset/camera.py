"""A virtual camera over one photograph: static, pan, tilt, zoom, roll, slow drift, and whip pans
with motion blur, rendered by one affine warp per frame (sub-frame samples averaged while the camera
whips, as a real shutter smears a fast pan).

A frame maps output pixel ``x`` to photo pixel ``c(t) + s(t) * R(a(t)) @ (x - centre)``: ``c`` the
crop centre moving at a constant rate (plus an eased whip), ``s`` the zoom and ``a`` the roll. Every
path is shrunk until all four crop corners stay inside the photo over the whole take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from tasks.corpus.lib.camera import speed_class
from tasks.corpus.lib.truth import CameraMotion

MOVES = {"static": 0.14, "pan": 0.22, "tilt": 0.12, "zoom": 0.16, "roll": 0.08, "drift": 0.16, "slow_tilt": 0.12}
COVER = 0.62  # the crop at zoom 1 covers this share of the photo's limiting side
WHIP_FRAMES = (5, 9)  # a whip pan's duration at 24 fps: a blur that passes in a third of a second
BLUR_SAMPLES = 7  # sub-frame positions averaged during a whip


@dataclass(frozen=True)
class CameraPlan:
    move: str
    velocity: tuple[float, float]  # crop centre, photo pixels per frame
    zoom: float  # log-scale change per frame (< 0: zooming in)
    roll: float  # radians per frame
    t0: int  # first content frame rendered (negative: a transition's lead)
    t1: int  # one past the last content frame rendered
    whip: tuple[int, int, float, float] | None = None  # start frame, frames, dx, dy in photo pixels
    centre: tuple[float, float] = (0.0, 0.0)  # crop centre at the take's middle, photo pixels
    base: float = 1.0  # photo pixels per output pixel at zoom 1


def _corners(plan: CameraPlan, t: float, width: int, height: int) -> np.ndarray:
    c, a = _state(plan, t)
    half = np.array([[-width, -height], [width, -height], [width, height], [-width, height]], np.float64) / 2
    return c + half @ a.T


def _state(plan: CameraPlan, t: float) -> tuple[np.ndarray, np.ndarray]:
    mid = (plan.t0 + plan.t1) / 2
    c = np.array(plan.centre) + np.array(plan.velocity) * (t - mid)
    if plan.whip is not None:
        start, frames, dx, dy = plan.whip
        u = min(1.0, max(0.0, (t - start) / frames))
        ease = u * u * (3 - 2 * u)
        c = c + np.array([dx, dy]) * (ease - 0.5)
    s = plan.base * math.exp(plan.zoom * (t - mid))
    ang = plan.roll * (t - mid)
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    return c, s * rot


def fits(plan: CameraPlan, photo_size: tuple[int, int], width: int, height: int) -> bool:
    pw, ph = photo_size
    for t in np.linspace(plan.t0, plan.t1, 12):
        pts = _corners(plan, float(t), width, height)
        if pts.min() < 1 or (pts[:, 0] > pw - 2).any() or (pts[:, 1] > ph - 2).any():
            return False
    return True


def plan_camera(rng: np.random.Generator, photo_size: tuple[int, int], width: int, height: int, t0: int, t1: int,
                whip_at: int | None = None, move: str | None = None) -> CameraPlan:
    """A move drawn from ``MOVES`` (or the one given) over content frames ``[t0, t1)``, shrunk to fit."""
    pw, ph = photo_size
    move = move or str(rng.choice(list(MOVES), p=list(MOVES.values())))
    base = COVER * min(pw / width, ph / height)
    sign = float(rng.choice([-1.0, 1.0]))
    speed = {"pan": rng.uniform(1.2, 4.0), "tilt": rng.uniform(0.8, 2.5), "drift": rng.uniform(0.2, 0.5),
             "slow_tilt": rng.uniform(0.35, 0.6)}.get(move, 0.0) * base
    heading = rng.uniform(0, 2 * math.pi)
    velocity = {"pan": (sign * speed, 0.0), "tilt": (0.0, sign * speed), "slow_tilt": (0.0, sign * speed),
                "drift": (speed * math.cos(heading), speed * math.sin(heading))}
    vel = velocity.get(move, (0.0, 0.0))
    zoom = sign * rng.uniform(0.003, 0.009) if move == "zoom" else 0.0
    roll = sign * rng.uniform(0.002, 0.005) if move == "roll" else 0.0
    whip = None
    if whip_at is not None:  # the camera whips to another part of the same photograph
        frames = max(3, round(rng.uniform(*WHIP_FRAMES)))
        whip = (whip_at, frames, float(rng.choice([-1, 1]) * 0.3 * pw), 0.0)
    centre = (pw / 2 + rng.uniform(-0.05, 0.05) * pw, ph / 2 + rng.uniform(-0.05, 0.05) * ph)
    plan = CameraPlan(move, vel, zoom, roll, t0, t1, whip, centre, base)
    for _ in range(40):
        if fits(plan, photo_size, width, height):
            return plan
        shrink = 0.85
        plan = CameraPlan(move, tuple(v * shrink for v in plan.velocity), plan.zoom * shrink, plan.roll * shrink,
                          t0, t1, None if plan.whip is None else (*plan.whip[:2], plan.whip[2] * shrink, 0.0),
                          (pw / 2, ph / 2), plan.base * (0.97 if move in ("roll", "zoom") or whip else 1.0))
    raise ValueError(f"no camera path fits a {pw}x{ph} photo for a {width}x{height} frame")


def render(photo: np.ndarray, plan: CameraPlan, t: int, width: int, height: int) -> np.ndarray:
    """Content frame ``t`` (BGR uint8)."""
    whipping = plan.whip is not None and plan.whip[0] - 1 <= t < plan.whip[0] + plan.whip[1] + 1
    times = np.linspace(t - 0.5, t + 0.5, BLUR_SAMPLES) if whipping else [float(t)]
    acc = None
    for tt in times:
        c, a = _state(plan, float(tt))
        m = np.hstack([a, (c - a @ np.array([width / 2, height / 2]))[:, None]])
        frame = cv2.warpAffine(photo, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        acc = frame.astype(np.float32) if acc is None else acc + frame
    return frame if len(times) == 1 else np.clip(acc / len(times) + 0.5, 0, 255).astype(np.uint8)


def camera_truth(plan: CameraPlan, width: int, height: int, fps: float) -> CameraMotion:
    """The take's 6DoF signs and speed (image displacement per second / frame diagonal, report 3.2)."""
    diag = math.hypot(width, height)
    vx, vy = (v / plan.base for v in plan.velocity)
    frac = (math.hypot(vx, vy) + 0.5 * diag * (abs(plan.zoom) + abs(plan.roll))) * fps / diag
    sign = lambda v: "+" if v > 1e-9 else "-" if v < -1e-9 else "0"  # noqa: E731
    axes = {"yaw": sign(vx) if plan.move == "pan" else "0", "pitch": sign(vy) if plan.move in ("tilt", "slow_tilt") else "0",
            "tx": sign(vx) if plan.move == "drift" else "0", "ty": sign(vy) if plan.move == "drift" else "0",
            "tz": sign(-plan.zoom), "roll": sign(plan.roll)}
    return CameraMotion(**axes, speed=speed_class(round(frac, 4)), speed_fraction_per_s=round(frac, 4))


def project(plan: CameraPlan, t: float, point: tuple[float, float], width: int, height: int) -> tuple[float, float]:
    """Where photo pixel ``point`` appears in content frame ``t`` (output pixels): a tracked region."""
    c, a = _state(plan, t)
    x = np.linalg.solve(a, np.asarray(point, np.float64) - c) + np.array([width / 2, height / 2])
    return float(x[0]), float(x[1])


def photo_point(plan: CameraPlan, t: float, xy: tuple[float, float], width: int, height: int) -> tuple[float, float]:
    """The photo pixel shown at output pixel ``xy`` of content frame ``t``."""
    c, a = _state(plan, t)
    p = c + a @ (np.asarray(xy, np.float64) - np.array([width / 2, height / 2]))
    return float(p[0]), float(p[1])
