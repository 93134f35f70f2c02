"""Camera-motion sub-expert (report section 3.2, Camera Motion Captioner): frames -> 6DoF label.

1. Steps: dense DIS optical flow between frames ``i`` and ``i + stride`` (grey, letterbox bars
   cropped, grain blurred), sampled on a grid, forward-backward checked, and a robust MAGSAC++
   homography of the dominant (background) motion; subjects and overlays are outliers. The stride
   is chosen per clip so one step moves ~8 px: slow motion is measured over many frames.
2. Typical step: per grid point, the median displacement over all steps, refitted as one
   homography (a crossing body or a flash for a few frames cannot drag it).
3. Speed, in the corpus truth's unit (``tasks/corpus/lib/camera.py``): mean displacement per second of
   a 7x5 grid of scene points (5%..95% of the frame) as a fraction of the frame diagonal;
   slow < 0.05 <= medium <= 0.20 < fast, static below ``static_below``.
4. Direction: the typical step over the clip's length is decomposed into a camera model with one
   parameter per axis, ``T(tx, ty) . S(e^-tz) . Rz(roll) . K Ry(yaw) Rx(pitch) K^-1`` about the
   image centre (K from an assumed field of view), by model selection over single axes and axis
   pairs. Translation and rotation agree to first order; a rotation's homography also carries the
   perspective (keystone) terms that a translation over a distant scene lacks, which is what
   separates a pan from a truck. This assumes a distant / planar scene (a homography); an
   essential-matrix path for strong parallax is not implemented.

Handheld shake (step-to-step jitter around the running mean) and abrupt change (the windowed
velocity jumps) are flagged from the same steps. Pure numpy + cv2, no I/O: frames in, a label out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from models.camera_model import _apply, camera_model, grid, mean_displacement, select_axes

AXES = ("tx", "ty", "tz", "roll", "pitch", "yaw")
SLOW_BELOW, FAST_ABOVE = 0.05, 0.20  # report section 3.2 speed classes (fraction of diagonal / s)


@dataclass(frozen=True)
class MotionParams:
    static_below: float = 0.01  # speed under which the camera counts as static (slow starts ~0.015)
    pair_gain: float = 0.5  # a two-axis motion must leave < this share of the best single axis' residual
    axis_share: float = 0.3  # ... and its weaker axis must move the image >= this share of the stronger's
    fov_deg: float = 60.0  # assumed horizontal field of view (corpus: 60; typical cinema lenses 40-70)
    grid_step: int = 6  # flow sampled every this many pixels
    ransac_px: float = 0.7
    fb_px: float = 0.5  # forward-backward flow disagreement beyond which a sample is dropped
    step_px: float = 8.0  # target displacement of one measured step (sets the frame stride)
    max_stride: int = 16
    max_frames: int = 120
    window_s: float = 0.5  # speed / abruptness are measured over windows of this length
    shake_ratio: float = 0.35  # handheld: jitter RMS over |smoothed motion| + a floor (below)
    shake_floor: float = 0.004  # per-frame jitter (fraction of diagonal) that is always shake
    abrupt_jump: float = 0.08  # abrupt: change of the windowed velocity (diagonal / s) ...
    abrupt_ratio: float = 0.6  # ... that is also this share of the faster window's speed


@dataclass
class MotionEstimate:
    """Everything measured; ``label()`` gives the schema's fields."""

    axes: dict[str, str]
    speed: str
    speed_fraction_per_s: float
    handheld: bool
    abrupt_change: bool
    axis_fraction_per_s: dict[str, float] = field(default_factory=dict)  # each axis alone
    params: dict[str, float] = field(default_factory=dict)  # fitted model over the whole clip
    valid_pairs: int = 0

    def label(self) -> dict:
        return {**self.axes, "speed": self.speed, "handheld": self.handheld, "abrupt_change": self.abrupt_change}


def speed_class(fraction: float, static_below: float) -> str:
    if fraction < static_below:
        return "static"
    return "slow" if fraction < SLOW_BELOW else "medium" if fraction <= FAST_ABOVE else "fast"


# --- flow -> homographies ---------------------------------------------------------------------


def to_gray(frame: np.ndarray, max_width: int = 480) -> np.ndarray:
    """uint8 grey, downscaled to at most ``max_width`` (flow precision is plenty there)."""
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if gray.shape[1] > max_width:
        scale = max_width / gray.shape[1]
        gray = cv2.resize(gray, (max_width, round(gray.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return gray


def active_area(grays: list[np.ndarray], black: int = 24, inset: int = 3) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the picture inside letterbox / pillarbox bars: rows and columns that
    stay near black over the clip would otherwise pin the flow to zero."""
    brightest = np.max(np.stack(grays[:: max(1, len(grays) // 8)]), axis=0)
    rows, cols = np.flatnonzero(brightest.max(axis=1) > black), np.flatnonzero(brightest.max(axis=0) > black)
    if len(rows) < 16 or len(cols) < 16:
        return 0, grays[0].shape[0], 0, grays[0].shape[1]
    return rows[0] + inset, rows[-1] + 1 - inset, cols[0] + inset, cols[-1] + 1 - inset


def denoise(grays: list[np.ndarray]) -> list[np.ndarray]:
    """Blur in proportion to the grain: film grain / sensor noise would otherwise be tracked as
    (static) texture. The level is the median absolute high-pass residual of a middle frame."""
    mid = grays[len(grays) // 2].astype(np.float32)
    level = float(np.median(np.abs(mid - cv2.GaussianBlur(mid, (0, 0), 1.0))))
    sigma = 1.0 if level < 2 else min(3.0, 0.35 * level)
    return [cv2.GaussianBlur(g, (0, 0), sigma) for g in grays]


class FlowHomographies:
    """Homographies of the dominant (background) motion between frames ``i`` and ``i + stride``:
    dense DIS optical flow sampled on a grid, forward-backward checked (occlusions, pixels
    entering or leaving the frame), then a robust MAGSAC++ fit; subjects and overlays are outliers.
    The stride is chosen per clip so that a step moves a few pixels: slow motion is measured
    over several frames (signal grows, flow noise does not), fast motion frame to frame."""

    def __init__(self, p: MotionParams):
        self.p = p
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def __call__(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray | None], int, tuple[int, int]]:
        raw = [to_gray(f) for f in frames]
        if len(raw) > self.p.max_frames:  # the middle of a long clip says enough
            first = (len(raw) - self.p.max_frames) // 2
            raw = raw[first:first + self.p.max_frames]
        size = raw[0].shape[::-1]
        y0, y1, x0, x1 = active_area(raw)
        grays = [np.ascontiguousarray(g[y0:y1, x0:x1]) for g in denoise(raw)]
        shift = np.array([[1.0, 0, x0], [0, 1, y0], [0, 0, 1]])
        probe = np.linspace(0, len(grays) - 2, min(6, len(grays) - 1)).round().astype(int)
        probed = [(i, self.pair(grays[i], grays[i + 1])) for i in probe]
        at = grid(grays[0].shape[1], grays[0].shape[0])
        moves = [mean_displacement(h, at) for _, h in probed if h is not None]
        per_frame = float(np.median(moves)) if moves else 1.0
        stride = int(np.clip(round(self.p.step_px / max(per_frame, 1e-3)), 1, min(self.p.max_stride, len(grays) - 1)))
        known = dict(probed) if stride == 1 else {}  # the probe's steps are the walk's at stride 1: flow them once
        pairs = []
        for i in range(len(grays) - stride):
            frozen = np.array_equal(raw[i], raw[i + stride])
            h = np.eye(3) if frozen else known[i] if i in known else self.pair(grays[i], grays[i + stride])
            pairs.append(None if h is None else shift @ h @ np.linalg.inv(shift))
        return pairs, stride, size

    def displacement(self, a: np.ndarray, b: np.ndarray) -> float | None:
        h = self.pair(a, b)
        return None if h is None else mean_displacement(h, grid(a.shape[1], a.shape[0]))

    def pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        if a.std() < 3 or b.std() < 3:  # black or flat: nothing to measure
            return None
        fwd, bwd = self.flow.calc(a, b, None), self.flow.calc(b, a, None)
        step = self.p.grid_step
        ys, xs = np.mgrid[step // 2:a.shape[0]:step, step // 2:a.shape[1]:step]
        src = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
        dst = src + fwd[ys.ravel(), xs.ravel()]
        back = cv2.remap(bwd, dst[:, 0].reshape(1, -1), dst[:, 1].reshape(1, -1), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(1e3, 1e3))[0]
        inside = (dst[:, 0] >= 2) & (dst[:, 0] < a.shape[1] - 2) & (dst[:, 1] >= 2) & (dst[:, 1] < a.shape[0] - 2)
        keep = inside & (np.linalg.norm(dst + back - src, axis=1) < self.p.fb_px)
        if keep.sum() < 24:
            return None
        h, inliers = cv2.findHomography(src[keep], dst[keep], cv2.USAC_MAGSAC, self.p.ransac_px,
                                        maxIters=2000, confidence=0.999)
        if h is None or inliers.sum() < max(24, 0.15 * keep.sum()):
            return None
        return h / h[2, 2]


# --- the estimator ---------------------------------------------------------------------------


def typical_homography(pairs: list[np.ndarray | None], width: int, height: int) -> np.ndarray:
    """The clip's typical step: per point of a dense grid, the median displacement over the
    measured steps, refitted as one homography. A median, not a composition, so a body crossing
    the frame or a flash for a few frames cannot drag the label, while noise still averages out;
    taken on displacements, not matrix entries, so correlated entries stay consistent."""
    pts = np.stack([*(a.ravel() for a in np.meshgrid(np.linspace(0, width, 9), np.linspace(0, height, 7))), np.ones(63)])
    moved = np.median(np.stack([_apply(h, pts) for h in pairs if h is not None]), axis=0)
    h, _ = cv2.findHomography(pts[:2].T.astype(np.float64), moved.T.astype(np.float64), 0)
    return h / h[2, 2]


def _windows(n_pairs: int, size: int) -> list[tuple[int, int]]:
    size = max(1, min(size, n_pairs))
    return [(s, s + size) for s in range(0, n_pairs - size + 1, max(1, size // 2))]


def estimate_motion(frames: list[np.ndarray], fps: float, params: MotionParams | None = None) -> MotionEstimate:
    """The clip's camera motion from its frames (RGB or grey, in order, at the clip's ``fps``)."""
    p = params or MotionParams()
    est = MotionEstimate(dict.fromkeys(AXES, "0"), "static", 0.0, False, False)
    if len(frames) < 3:
        return est
    pairs, stride, (width, height) = FlowHomographies(p)(frames)
    est.valid_pairs = sum(h is not None for h in pairs)
    if est.valid_pairs < 2:
        return est
    diag, pts = math.hypot(width, height), grid(width, height)
    step = typical_homography(pairs, width, height)
    # Speed in the corpus-truth unit: grid displacement per frame * fps / diagonal.
    est.speed_fraction_per_s = round(mean_displacement(step, pts) / stride * fps / diag, 4)
    est.speed = speed_class(est.speed_fraction_per_s, p.static_below)
    motion = _pair_motion(pairs, pts) / stride  # pixels per frame, one row per measured step
    est.handheld = _shaky(motion, stride, diag, p)
    est.abrupt_change = _abrupt(motion, max(2, round(p.window_s * fps)), fps, diag, p)
    if est.speed == "static":
        return est
    focal = (width / 2) / math.tan(math.radians(p.fov_deg) / 2)
    # The typical step over the clip's length, then as the model's frame -> reference map.
    repeats = max(1, round(len(frames) / stride))
    theta = select_axes(np.linalg.inv(np.linalg.matrix_power(step, repeats)), width, height, focal, p.pair_gain, p.axis_share)
    seconds = repeats * stride / fps
    for i, axis in enumerate(AXES):
        alone = np.zeros(6)
        alone[i] = theta[i]
        est.axis_fraction_per_s[axis] = mean_displacement(camera_model(alone, width, height, focal), pts) / seconds / diag
    est.params = dict(zip(AXES, map(float, theta), strict=True))
    for i, axis in enumerate(AXES):
        if theta[i] != 0:
            est.axes[axis] = "+" if theta[i] > 0 else "-"
    return est


def _pair_motion(pairs: list[np.ndarray | None], pts: np.ndarray) -> np.ndarray:
    """Mean grid displacement vector of each frame pair (NaN where unknown), pixels."""
    out = np.full((len(pairs), 2), np.nan)
    for i, h in enumerate(pairs):
        if h is not None:
            out[i] = (_apply(h, pts) - pts[:2]).mean(axis=1)
    return out


def _shaky(motion: np.ndarray, stride: int, diag: float, p: MotionParams) -> bool:
    """Handheld: the measured motion jitters from step to step around its running mean (a smooth
    dolly or pan does not). Over a stride of k frames, per-frame jitter j shows as ~ j*sqrt(2)/k."""
    motion = motion[~np.isnan(motion).any(axis=1)]
    if len(motion) < 7:
        return False
    kernel = np.ones(5) / 5
    smooth = np.stack([np.convolve(motion[:, c], kernel, mode="valid") for c in range(2)], axis=1)
    jitter = float(np.sqrt(((motion[2:-2] - smooth) ** 2).sum(axis=1).mean())) * stride / math.sqrt(2) / diag
    level = float(np.hypot(*smooth.T).mean()) / diag
    return jitter > p.shake_floor + p.shake_ratio * level


def _abrupt(motion: np.ndarray, window: int, fps: float, diag: float, p: MotionParams) -> bool:
    """Abrupt change: the windowed velocity (diagonal / s) jumps between neighbouring windows."""
    vel = [np.nanmedian(motion[a:b], axis=0) * fps / diag for a, b in _windows(len(motion), window)
           if np.isfinite(motion[a:b]).all(axis=1).sum() >= (b - a) / 2]
    for v0, v1 in zip(vel[:-1], vel[1:], strict=False):
        jump = float(np.hypot(*(v1 - v0)))
        if jump > p.abrupt_jump and jump > p.abrupt_ratio * max(np.hypot(*v0), np.hypot(*v1)):
            return True
    return False
