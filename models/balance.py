"""Concept balancing math (report section 3.1, Figure 5): how many samples of each subject category.

The report balances D_540p by subject category: Human falls from 84.8% to 55.3%, Scenery rises
from 8.8% to 14.0%, Animal from 4.1% to 8.5%, and the total shrinks by about half. Two facts shape
the algorithm:

- Capping dominant classes alone cannot give both numbers. With every non-Human clip kept once,
  Human at 55.3% leaves 15.2 / 0.447 = 34% of the pool (-66%), and a 50% budget leaves Human at
  (50 - 15.2) / 50 = 70%. Both hold only if the rare classes supply 22.4% of the old pool's size,
  i.e. ~1.5x what they have. So rare classes are kept whole AND may be repeated (``max_repeat``);
  ``max_repeat=1`` is pure subsampling with the bound above.
- Target shares that a class cannot reach (too rare even repeated) are re-spread over the other
  rare classes, never onto the dominant ones: the dominant caps are the point of balancing.

Per class c with n_c clips, target share t_c, budget B = keep_fraction * N:
  dominant (n_c >= t_c B): k_c = t_c B            (capped, subsampled)
  rare     (n_c <  t_c B): k_c = clip(lam t_c, n_c, max_repeat n_c), lam such that the rare
                           classes fill B - sum(dominant); never below n_c (kept whole).
If the rare classes, each kept whole, already exceed their part of the budget, the dominant ones
shrink to make room; if even repeated they cannot fill it, the total stays under B.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

# Report Figure 5, D_540p before balancing: Human 84.8%, Scenery 8.8%, Animal 4.1%. The report gives no
# before-shares for the other categories; we assume the remaining 1 - 0.848 - 0.088 - 0.041 = 2.3% is split
# in proportion to their after-targets (``infra.config_datasets.REPORT_TARGET``: architecture 0.046,
# vehicle 0.088, object 0.088, sum 0.222): 0.023 * 0.046 / 0.222 = 0.00477 -> 0.0048 and
# 0.023 * 0.088 / 0.222 = 0.00912 -> 0.0091 (rounded to 0.01 points; the three sum to exactly 0.023).
# Each then needs t_c * 0.5 / b_c = 0.5 * 0.222 / 0.023 = 4.83 repeats to reach its target at a 50%
# budget, within max_repeat 5, so every target is reachable and the water-filling re-spreads nothing
# onto Animal (an uneven split, e.g. 1.2 / 0.7 / 0.4, leaves vehicle and object short and hands their
# share to whichever rare class can still grow).
REPORT_BEFORE = {"human": 0.848, "scenery": 0.088, "animal": 0.041, "architecture": 0.0048,
                 "vehicle": 0.0091, "object": 0.0091}
# After balancing, for the categories whose before share the report also gives. The full target
# (every category, the unnamed remainder spread) is ``infra.config_datasets.REPORT_TARGET``.
REPORT_AFTER = {"human": 0.553, "scenery": 0.14, "animal": 0.085}
REPORT_KEPT_FRACTION = 0.5  # samples after / clips before ("reduced by about 50%")


def draw_categories(n: int, skew: dict[str, float] = REPORT_BEFORE, seed: int = 0) -> list[str]:
    """``n`` categories drawn i.i.d. from ``skew`` (normalised) with numpy's Generator seeded ``seed``:
    a pool with a known skew, for the tests and benchmarks/balance.py."""
    names = list(skew)
    p = np.array([skew[c] for c in names], float)
    return np.random.default_rng(seed).choice(names, size=n, p=p / p.sum()).tolist()


def normalise(target: dict[str, float], classes: Sequence[str]) -> dict[str, float]:
    """Target shares over the classes present; a class the target does not name gets the smallest
    named share (an unforeseen concept is treated as rare, not dropped)."""
    floor = min(target.values())
    raw = {c: float(target.get(c, floor)) for c in classes}
    total = sum(raw.values())
    return {c: v / total for c, v in raw.items()}


def _fill(lo: np.ndarray, hi: np.ndarray, weight: np.ndarray, budget: float) -> np.ndarray:
    """``clip(lam * weight, lo, hi)`` with ``lam`` chosen so the sum equals ``budget`` (bisection;
    the sum is monotone in lam). Assumes ``sum(lo) <= budget <= sum(hi)``."""
    a, b = 0.0, 1.0
    while np.clip(b * weight, lo, hi).sum() < budget:
        b *= 2
    for _ in range(200):
        mid = (a + b) / 2
        if np.clip(mid * weight, lo, hi).sum() < budget:
            a = mid
        else:
            b = mid
    return np.clip(b * weight, lo, hi)


def _round(values: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding: integers summing to round(sum(values))."""
    floors = {c: math.floor(v) for c, v in values.items()}
    missing = round(sum(values.values())) - sum(floors.values())
    for c in sorted(values, key=lambda c: (floors[c] - values[c], c))[: max(missing, 0)]:
        floors[c] += 1
    return floors


def plan_counts(
    counts: dict[str, int], target: dict[str, float], keep_fraction: float, max_repeat: int = 1
) -> dict[str, int]:
    """Samples to keep per class (may exceed the class size when ``max_repeat > 1``)."""
    classes = [c for c in sorted(counts) if counts[c] > 0]
    if not classes:
        return {}
    shares = normalise(target, classes)
    n = np.array([counts[c] for c in classes], float)
    t = np.array([shares[c] for c in classes])
    budget = keep_fraction * n.sum()
    dominant = n >= t * budget
    k = np.where(dominant, t * budget, 0.0)
    rare_budget = budget - k[dominant].sum()
    lo, hi = n[~dominant], max_repeat * n[~dominant]
    if lo.sum() >= rare_budget:  # rare classes whole already overfill: dominant ones make room
        k[~dominant] = lo
        room = max(budget - lo.sum(), 0.0)
        k[dominant] = t[dominant] * room / max(t[dominant].sum(), 1e-12)
    elif hi.sum() <= rare_budget:  # even repeated, rare classes cannot fill: stay under budget
        k[~dominant] = hi
    else:
        k[~dominant] = _fill(lo, hi, t[~dominant], rare_budget)
    return _round(dict(zip(classes, k.tolist(), strict=True)))


def _rank(seed: int, clip_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()  # bytes order = hex-digest order


def assign_repeats(clip_ids: Sequence[str], categories: Sequence[str], plan: dict[str, int], seed: int = 0) -> np.ndarray:
    """How many times each clip is sampled (0 = dropped). Within a class every clip gets
    ``k // n`` and the ``k % n`` first by a seeded hash of its id get one more: deterministic,
    independent of row order, and a larger budget keeps a superset. One hash per clip and one sort:
    linear-logarithmic in the pool, no per-class Python lists."""
    repeats = np.zeros(len(clip_ids), dtype=np.int64)
    if not len(clip_ids):
        return repeats
    classes, which = np.unique(np.asarray(categories, dtype=object).astype(str), return_inverse=True)
    ranks = np.fromiter((_rank(seed, c) for c in clip_ids), dtype="S32", count=len(clip_ids))
    order = np.lexsort((ranks, which))  # by class, then by rank within it
    bounds = np.searchsorted(which[order], np.arange(len(classes) + 1))
    for k, c in enumerate(classes):
        idx = order[bounds[k]:bounds[k + 1]]
        q, r = divmod(plan.get(c, len(idx)), len(idx))
        repeats[idx] = q
        repeats[idx[:r]] += 1
    return repeats


def shares(categories: Sequence[str], weights: Sequence[int] | None = None) -> dict[str, float]:
    """Share of each category, optionally weighting each item (e.g. by its repeat count)."""
    if not len(categories):
        return {}
    classes, which = np.unique(np.asarray(categories, dtype=object).astype(str), return_inverse=True)
    tally = np.bincount(which, weights=None if weights is None else np.asarray(weights, np.int64),
                        minlength=len(classes)).astype(np.int64)
    total = int(tally.sum())
    return {str(c): int(v) / total for c, v in zip(classes, tally, strict=True)} if total else {}
