"""Camera-motion balancing of the SFT data (report section 5.5, Camera Director: SFT on ~1M samples chosen
from the SFT data, balanced over camera motion).

Each clip's class is its camera label from the caption stage's camera expert (``models.caption_schema.
CameraMotion``): the moving 6DoF axes with their signs and the speed class, e.g. ``yaw+/slow`` or
``tx- tz+/medium``; a clip without movement (or speed ``static``) is ``static``. Classes are then balanced
exactly as concept balancing balances subject categories (``models.balance``: ``plan_counts`` caps the
dominant classes at their target share and repeats rare ones up to ``max_repeat``; ``assign_repeats`` picks
the clips by a seeded hash). The target is uniform over the classes present unless one is given.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from models.balance import assign_repeats, plan_counts, shares

AXES = ("tx", "ty", "tz", "roll", "pitch", "yaw")
STATIC = "static"


def moves(motion: dict) -> list[str]:
    """The moving axes with their sign, e.g. ['tz+', 'yaw-'] (schema order)."""
    return [f"{axis}{motion.get(axis, '0')}" for axis in AXES if str(motion.get(axis, "0")) != "0"]


def camera_class(motion: dict) -> str:
    """The balancing class of one ``camera_motion`` label (a CameraMotion dict)."""
    found, speed = moves(motion), str(motion.get("speed", STATIC))
    if not found or speed == STATIC:
        return STATIC
    return f"{' '.join(found)}/{speed}"


def label_shares(motions: Sequence[dict], weights: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
    """Shares of the joint classes, of the speed classes, and of each signed axis move (a clip moving on two
    axes counts for both; ``none`` = static), optionally weighted by repeat counts."""
    weights = list(weights) if weights is not None else [1] * len(motions)
    speed = [STATIC if camera_class(m) == STATIC else str(m.get("speed")) for m in motions]
    axis_items, axis_weights = [], []
    for m, w in zip(motions, weights, strict=True):
        for move in moves(m) if camera_class(m) != STATIC else ["none"]:
            axis_items.append(move)
            axis_weights.append(w)
    return {"class": shares([camera_class(m) for m in motions], weights), "speed": shares(speed, weights),
            "move": shares(axis_items, axis_weights)}


def balance_camera(clip_ids: Sequence[str], motions: Sequence[dict], keep_fraction: float, max_repeat: int,
                   seed: int = 0, target: dict[str, float] | None = None) -> tuple[list[int], dict]:
    """(repeats per clip, summary with the shares before and after and the per-class plan)."""
    classes = [camera_class(m) for m in motions]
    counts = Counter(classes)
    plan = plan_counts(counts, target or dict.fromkeys(counts, 1.0), keep_fraction, max_repeat)
    repeats = assign_repeats(list(clip_ids), classes, plan, seed).tolist()
    summary = {"clips_before": len(clip_ids), "samples_after": int(sum(repeats)),
               "unique_after": int(sum(r > 0 for r in repeats)), "plan": plan,
               "before": label_shares(motions), "after": label_shares(motions, repeats)}
    return repeats, summary


def imbalance(class_shares: dict[str, float]) -> float:
    """Largest class share over the smallest (1 = perfectly balanced)."""
    values = [v for v in class_shares.values() if v > 0]
    return max(values) / min(values) if values else 1.0
