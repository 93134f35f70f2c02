"""Pixel-level motion defects, the automatic pair plan, and the motion-statistics oracle (report 3.4.1).

Videos are float arrays (T, H, W, 3) in [0, 1]. Besides the regenerations (``models.regenerate``) the
report makes specific motion defects by frame-rate manipulation, injected noise and time reversal.
A real clip beats each of its distortions; two distortions of one clip form a pair only when their
levels (``DISTORTION_LEVEL``) differ, the milder one winning.

The oracle stands in for the human labellers of generated samples when no one labels them (rows marked
``simulated``): it measures each video's motion statistics, standardises them against the real clips'
distribution, and prefers the sample closer to real motion; near-equal distances are a tie. The statistic
that is furthest off names the failure (the report's taxonomy, ``MOTION_FAILURES``).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from infra.config_post import DISTORTION_LEVEL, MOTION_FAILURES

PIXEL_DISTORTIONS = ("frame_rate", "noise", "reverse")
STATS = ("motion", "flicker", "detail")
_FLOOR = 1e-6


def stutter(frames: np.ndarray) -> np.ndarray:
    """Half the frame rate at the same length: every other frame dropped, the kept ones shown twice."""
    return frames[np.arange(len(frames)) // 2 * 2]


def add_noise(frames: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian pixel noise of ``std`` (fraction of full scale), clipped to [0, 1]."""
    return np.clip(frames + rng.normal(0.0, std, frames.shape).astype(frames.dtype), 0.0, 1.0)


def reverse(frames: np.ndarray) -> np.ndarray:
    """Time reversal: plausible pictures, implausible motion (physics runs backwards)."""
    return frames[::-1].copy()


def distort(kind: str, frames: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "frame_rate":
        return stutter(frames)
    if kind == "noise":
        return add_noise(frames, noise_std, rng)
    if kind == "reverse":
        return reverse(frames)
    raise ValueError(f"kind must be one of {PIXEL_DISTORTIONS}, got {kind!r}")


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference (0-1) of two videos of one shape."""
    if a.shape != b.shape:
        raise ValueError(f"videos differ in shape: {a.shape} vs {b.shape}")
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def level(desc: str) -> int:
    """0 for the real clip, else the distortion's level."""
    return 0 if desc == "real" else DISTORTION_LEVEL[desc]


def auto_pairs(distortions: list[str]) -> list[tuple[str, str]]:
    """(chosen, rejected) descriptions: real over every distortion, then the milder of every two
    distortions whose levels differ (equal levels make no pair)."""
    pairs = [("real", d) for d in distortions]
    for x, y in combinations(distortions, 2):
        if level(x) != level(y):
            pairs.append((x, y) if level(x) < level(y) else (y, x))
    return pairs


def motion_stats(frames: np.ndarray) -> dict[str, float]:
    """motion: mean |frame difference|; flicker: mean |change of frame brightness| (global jumps);
    detail: mean |horizontal + vertical pixel gradient| (sharpness, damaged by blur or smearing)."""
    x = np.asarray(frames, dtype=np.float32).mean(-1)  # luma-ish (T, H, W)
    diff = np.abs(np.diff(x, axis=0)) if len(x) > 1 else np.zeros_like(x)
    brightness = x.mean((1, 2))
    detail = np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()
    return {"motion": float(diff.mean()), "flicker": float(np.abs(np.diff(brightness)).mean()) if len(x) > 1 else 0.0,
            "detail": float(detail)}


class MotionOracle:
    """Judges two generated videos by how far their motion statistics lie from the real clips'."""

    def __init__(self, real: list[dict[str, float]], tie_margin: float):
        if not real:
            raise ValueError("the oracle needs the motion statistics of at least one real clip")
        logs = np.log(np.array([[s[k] for k in STATS] for s in real]) + _FLOOR)
        self.mean = logs.mean(0)
        # One real clip (or identical ones) has no spread: fall back to a factor-of-e scale.
        self.std = np.maximum(logs.std(0), 1.0 if len(real) < 2 else 0.1)
        self.tie_margin = tie_margin

    def z(self, stats: dict[str, float]) -> np.ndarray:
        return (np.log(np.array([stats[k] for k in STATS]) + _FLOOR) - self.mean) / self.std

    def distance(self, stats: dict[str, float]) -> float:
        return float(np.linalg.norm(self.z(stats)))

    def failure(self, stats: dict[str, float]) -> str:
        """The taxonomy entry of the statistic that is furthest from real motion."""
        z = self.z(stats)
        worst = STATS[int(np.abs(z).argmax())]
        if worst == "motion":
            return MOTION_FAILURES[0] if z[0] > 0 else MOTION_FAILURES[1]  # excess / insufficient motion
        if worst == "flicker":
            return MOTION_FAILURES[5]  # unnatural motion
        return MOTION_FAILURES[3]  # local detail damage

    def judge(self, a: dict[str, float], b: dict[str, float]) -> tuple[str, str | None]:
        """("a" | "b" | "tie", the loser's failure or None for a tie)."""
        da, db = self.distance(a), self.distance(b)
        if abs(da - db) < self.tie_margin:
            return "tie", None
        return ("a", self.failure(b)) if da < db else ("b", self.failure(a))
