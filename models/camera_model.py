"""The camera model of the camera-motion sub-expert (``models.camera_motion``, report section 3.2): a
relative pose ``(tx, ty, tz, roll, pitch, yaw)`` as a homography about the image centre, and its fit to a
measured homography by model selection over single axes and axis pairs."""

from __future__ import annotations

import math

import numpy as np

# Fit bounds: translations in pixels are free; zoom within e^+-3, rotations within +-70 degrees.
LIMITS = np.array([1e6, 1e6, 3.0, 1.2, 1.2, 1.2])


def grid(width: int, height: int) -> np.ndarray:
    """The corpus truth's measuring grid: 7x5 points over 5%..95% of the frame, homogeneous."""
    xs, ys = np.meshgrid(np.linspace(0.05, 0.95, 7) * width, np.linspace(0.05, 0.95, 5) * height)
    return np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])


def _apply(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    q = h @ pts
    return q[:2] / q[2]


def mean_displacement(h: np.ndarray, pts: np.ndarray) -> float:
    return float(np.hypot(*(_apply(h, pts) - pts[:2])).mean())


def camera_model(theta: np.ndarray, width: int, height: int, focal: float) -> np.ndarray:
    """Frame pixel -> reference-frame pixel for relative pose ``theta`` (AXES order; tx/ty in
    pixels, tz ln-zoom, rotations in radians), the same composition the corpus renders with."""
    tx, ty, tz, roll, pitch, yaw = theta
    k = np.diag([focal, focal, 1.0])
    cy, sy, cp, sp, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    rot_y = np.array([[cy, 0, sy], [0, 1.0, 0], [-sy, 0, cy]])
    rot_x = np.array([[1.0, 0, 0], [0, cp, sp], [0, -sp, cp]])
    rot_z = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1.0]])
    zoom = math.exp(-tz)
    place = np.array([[zoom, 0, width / 2 + tx], [0, zoom, height / 2 + ty], [0, 0, 1.0]])
    centre = np.array([[1.0, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    return place @ rot_z @ k @ rot_y @ rot_x @ np.linalg.inv(k) @ centre


def fit_camera(target: np.ndarray, width: int, height: int, focal: float, axes: tuple[int, ...] = tuple(range(6)),
               iters: int = 15) -> tuple[np.ndarray, float]:
    """Levenberg-Marquardt fit of ``camera_model`` restricted to ``axes`` (indices into AXES) to
    the homography ``target`` over a dense grid; returns (theta, RMS residual in pixels)."""
    pts = np.stack([*(a.ravel() for a in np.meshgrid(np.linspace(0, width, 9), np.linspace(0, height, 7))), np.ones(63)])
    want = _apply(target, pts).ravel()
    half_diag = 0.5 * math.hypot(width, height)
    # Work in pixel-equivalent units so every column of the Jacobian has a similar scale.
    scale = np.array([1.0, 1.0, 1 / half_diag, 1 / half_diag, 1 / focal, 1 / focal])[list(axes)]
    limits = LIMITS[list(axes)] / scale

    def residual(v: np.ndarray) -> np.ndarray:
        theta = np.zeros(6)
        theta[list(axes)] = v * scale
        return want - _apply(camera_model(theta, width, height, focal), pts).ravel()

    u, damping = np.zeros(len(axes)), 1e-3
    res = residual(u)
    cost = float(res @ res)
    for _ in range(iters):  # Gauss-Newton steps, damped when they overshoot
        jac = np.stack([(res - residual(u + e)) / 1e-3 for e in np.eye(len(axes)) * 1e-3], axis=1)
        normal = jac.T @ jac
        while damping < 1e6:
            step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-9), jac.T @ res)
            trial = np.clip(u + step, -limits, limits)
            new_res = residual(trial)
            if float(new_res @ new_res) < cost:
                u, res, cost, damping = trial, new_res, float(new_res @ new_res), damping / 10
                break
            damping *= 10
        else:
            break
        if np.abs(step).max() < 1e-4:
            break
    theta = np.zeros(6)
    theta[list(axes)] = u * scale
    return theta, math.sqrt(cost / len(pts[0]))


def select_axes(target: np.ndarray, width: int, height: int, focal: float, pair_gain: float,
                axis_share: float) -> np.ndarray:
    """Model selection over the report's motion types: every single axis and every pair of axes
    is fitted alone; the best pair wins only if it explains the motion clearly better
    (residual < ``pair_gain`` x the best single axis') and its weaker axis moves the image by at
    least ``axis_share`` of the stronger one's. Fitting all six at once is ill-posed:
    a truck and an opposite pan cancel to first order, so noise splits one motion into two."""
    singles = [fit_camera(target, width, height, focal, (i,)) for i in range(6)]
    best = min(singles, key=lambda r: r[1])
    pts = grid(width, height)

    def balanced(theta: np.ndarray) -> bool:
        moves = []
        for i in np.flatnonzero(theta):
            alone = np.zeros(6)
            alone[i] = theta[i]
            moves.append(mean_displacement(camera_model(alone, width, height, focal), pts))
        return len(moves) == 2 and min(moves) >= axis_share * max(moves)

    pairs = [fit_camera(target, width, height, focal, (i, j)) for i in range(6) for j in range(i + 1, 6)]
    pairs = [r for r in pairs if r[1] < pair_gain * best[1] and balanced(r[0])]
    return min(pairs, key=lambda r: r[1])[0] if pairs else best[0]


