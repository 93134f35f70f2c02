"""Concept balancing (report section 3.1, Figure 5) on corpora drawn with the report's and the synthetic corpus's category skew.

    python -m benchmarks.balance [--clips 20000] [--seeds 0 1 2] [--out benchmarks/results/balance.json]

Issue target: concept balancing reproduces the report's before/after shares within 3 points on a corpus
drawn with the report's skew. The report balances D_540p: Human 84.8% -> 55.3%, Scenery 8.8% -> 14.0%,
Animal 4.1% -> 8.5%, total samples reduced by about 50% (``models.balance.REPORT_BEFORE`` /
``REPORT_AFTER``; the 2.3% the figure leaves unnamed is split over our other three categories in
proportion to their after-targets, an assumption of ours).

For each corpus and seed, ``--clips`` categories are drawn i.i.d. with numpy's seeded Generator from
the skew's shares, then balanced exactly as stage ``D_post`` does (``plan_counts`` + ``assign_repeats``
with the default ``BalanceConfig``: report target, keep_fraction 0.5, max_repeat 5). Measured:
- before / after share of every category, the report's before / after for Human, Scenery and Animal,
  and the absolute differences in points; ``pass`` when every after-difference is <= 3 points, and for
  the report skew also every before-difference (the draw itself matches the report);
- total ratio samples after / clips before (report: about 0.5), also within 3 points;
- rare classes (those below their share of the budget: n_c < t_c * keep_fraction * N, decided from the
  draw, before balancing) kept whole: every clip sampled at least once; dominant ones only subsampled.
Corpora: ``report`` (the report's before-shares) and ``corpus`` (``tasks.corpus.lib.sprites.CATEGORY_WEIGHTS``,
the synthetic films' own skew, whose before-shares differ from the report's by design). Per corpus:
every seed, their ``mean`` (differences from the mean shares), ``expected`` (the skew's exact expected
counts, no sampling noise) and ``pass`` = every seed passes, total ratio included.
Also timed: ``Counter`` + ``plan_counts`` and ``assign_repeats`` on ``--timing-clips`` (1,000,000) clips of the
report skew.

Finding (results/balance.json): Animal's report share, 4.1%, lies just under its share of the budget
(8.5% x 0.5 = 4.25%). A draw with Animal above that caps it at 8.5% like Human and Scenery; one below
makes it a rare class, which the water-filling fills to its target only if the other rare classes can
reach theirs. With ``REPORT_BEFORE``'s proportional split (0.48 / 0.91 / 0.91%) each of Architecture,
Vehicle and Object needs 4.83 repeats, within max_repeat 5, so Animal lands at 8.5% (expected counts);
a draw a few clips short (seed 0: Architecture 0.435% < 0.46%) re-spreads only a fraction of a point.
An earlier uneven split (1.2 / 0.7 / 0.4%) left Vehicle and Object short and put Animal at 12-13%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from infra.config_datasets import BalanceConfig  # noqa: E402
from models.balance import (  # noqa: E402
    REPORT_AFTER,
    REPORT_BEFORE,
    REPORT_KEPT_FRACTION,
    assign_repeats,
    draw_categories,
    normalise,
    plan_counts,
    shares,
)

TOLERANCE_POINTS = 3.0


def expected_categories(n: int, skew: dict[str, float]) -> list[str]:
    """``round(n * share)`` of each category of ``skew`` (normalised): the draw's expectation, no sampling noise."""
    total = sum(skew.values())
    return [c for c, v in skew.items() for _ in range(round(n * v / total))]


def clip_ids(n: int) -> list[str]:
    return [f"clip{i:08d}" for i in range(n)]


def points(x: float) -> float:
    return round(100 * x, 3)


def with_diffs(row: dict) -> dict:
    """A report row (shares in %) with its absolute before / after differences from the report, in points."""
    row["diff_before"] = round(abs(row["before"] - row["report_before"]), 3)
    row["diff_after"] = round(abs(row["after"] - row["report_after"]), 3)
    return row


def within(report: dict, check_before: bool, tolerance: float) -> bool:
    """Every after-difference (and, with ``check_before``, every before-difference) within ``tolerance`` points."""
    keys = ("diff_after", "diff_before") if check_before else ("diff_after",)
    return all(row[k] <= tolerance for row in report.values() for k in keys)


def measure(cats: list[str], cfg: BalanceConfig, seed: int = 0, check_before: bool = True,
            tolerance: float = TOLERANCE_POINTS) -> dict:
    """Balance ``cats`` as stage D_post does and compare with the report (shares in %, differences in points)."""
    counts = Counter(cats)
    plan = plan_counts(counts, cfg.target, cfg.keep_fraction, cfg.max_repeat)
    repeats = assign_repeats(clip_ids(len(cats)), cats, plan, seed)
    before, after = shares(cats), shares(cats, repeats)
    target = normalise(cfg.target, sorted(counts))
    budget = cfg.keep_fraction * len(cats)
    rare = sorted(c for c in counts if counts[c] < target[c] * budget)  # decided before balancing
    arr = np.array(cats)
    report = {c: with_diffs({"before": points(before.get(c, 0.0)), "after": points(after.get(c, 0.0)),
                             "report_before": points(REPORT_BEFORE[c]), "report_after": points(REPORT_AFTER[c])})
              for c in REPORT_AFTER}
    ratio = float(repeats.sum()) / len(cats)
    ratio_diff = points(abs(ratio - REPORT_KEPT_FRACTION))
    passed = within(report, check_before, tolerance)
    return {
        "clips": len(cats),
        "before": {c: points(v) for c, v in before.items()},
        "after": {c: points(v) for c, v in after.items()},
        "report": report,
        "max_diff_after": max(r["diff_after"] for r in report.values()),
        "max_diff_before": max(r["diff_before"] for r in report.values()),
        "total_ratio": round(ratio, 5),
        "unique_ratio": round(float((repeats > 0).sum()) / len(cats), 5),
        "total_ratio_diff": ratio_diff,
        "total_ratio_pass": ratio_diff <= tolerance,
        "rare": rare,
        "rare_kept_whole": {c: bool((repeats[arr == c] >= 1).all()) for c in rare},
        "dominant_max_repeat": {c: int(repeats[arr == c].max()) for c in sorted(set(counts) - set(rare))},
        "plan": plan,
        "pass": passed,
    }


def mean_of(runs: list[dict], check_before: bool) -> dict:
    """Mean over seeds of the shares and ratios; differences recomputed from the mean shares."""
    cats = sorted({c for r in runs for c in r["before"]})

    def avg(values) -> float:
        return round(statistics.fmean(values), 3)

    report = {c: with_diffs({k: avg(r["report"][c][k] for r in runs)
                             for k in ("before", "after", "report_before", "report_after")})
              for c in REPORT_AFTER}
    ratio = round(statistics.fmean(r["total_ratio"] for r in runs), 5)
    passed = within(report, check_before, TOLERANCE_POINTS)
    return {
        "before": {c: avg(r["before"].get(c, 0.0) for r in runs) for c in cats},
        "after": {c: avg(r["after"].get(c, 0.0) for r in runs) for c in cats},
        "report": report,
        "max_diff_after": max(r["diff_after"] for r in report.values()),
        "max_diff_before": max(r["diff_before"] for r in report.values()),
        "total_ratio": ratio,
        "total_ratio_diff": points(abs(ratio - REPORT_KEPT_FRACTION)),
        "rare_kept_whole": all(all(r["rare_kept_whole"].values()) for r in runs),
        "dominant_subsampled_only": all(max(r["dominant_max_repeat"].values(), default=1) <= 1 for r in runs),
        "pass": passed,
        "all_seeds_pass": all(r["pass"] and r["total_ratio_pass"] for r in runs),
    }


def time_balance(n: int, cfg: BalanceConfig, seed: int = 0) -> dict:
    """Seconds for Counter + plan_counts and for assign_repeats on ``n`` clips of the report skew."""
    cats, ids = draw_categories(n, REPORT_BEFORE, seed), clip_ids(n)
    started = time.perf_counter()
    plan = plan_counts(Counter(cats), cfg.target, cfg.keep_fraction, cfg.max_repeat)
    planned = time.perf_counter()
    repeats = assign_repeats(ids, cats, plan, cfg.seed)
    done = time.perf_counter()
    return {"clips": n, "plan_counts_s": round(planned - started, 4), "assign_repeats_s": round(done - planned, 3),
            "total_s": round(done - started, 3), "samples_after": int(repeats.sum())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timing-clips", type=int, default=1_000_000, help="0 skips the timing")
    parser.add_argument("--out", default="benchmarks/results/balance.json")
    args = parser.parse_args(argv)

    from tasks.corpus.lib.sprites import CATEGORY_WEIGHTS

    cfg = BalanceConfig()
    skews = {"report": (dict(REPORT_BEFORE), True), "corpus": (dict(CATEGORY_WEIGHTS), False)}
    corpora = {}
    for name, (skew, check_before) in skews.items():
        runs = {str(s): measure(draw_categories(args.clips, skew, s), cfg, s, check_before) for s in args.seeds}
        mean = mean_of(list(runs.values()), check_before)
        corpora[name] = {"skew": skew, "pass_checks_before": check_before, "pass": mean["all_seeds_pass"],
                         "mean": mean, "seeds": runs,
                         "expected": measure(expected_categories(args.clips, skew), cfg, 0, check_before)}
    result = {
        "target": f"after balancing, Human/Scenery/Animal shares within {TOLERANCE_POINTS:g} points of the report's "
                  "(report skew: before shares too); total samples after / clips before about 0.5",
        "report": {"before": {c: points(REPORT_BEFORE[c]) for c in REPORT_AFTER},
                   "after": {c: points(v) for c, v in REPORT_AFTER.items()}, "total_ratio": REPORT_KEPT_FRACTION},
        "tolerance_points": TOLERANCE_POINTS, "clips": args.clips, "seeds": args.seeds,
        "config": cfg.model_dump(include={"target", "keep_fraction", "max_repeat", "seed"}),
        "corpora": corpora,
        "timing": time_balance(args.timing_clips, cfg) if args.timing_clips else None,
        "host": platform.node(), "cpus": len(os.sched_getaffinity(0)), "machine": platform.machine(),
        "python": platform.python_version(), "numpy": np.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")

    print(f"{'corpus':8} {'category':9} {'before':>7} {'after':>7} {'report':>14} {'diff':>6}")
    for name, corpus in corpora.items():
        mean = corpus["mean"]
        for c, row in mean["report"].items():
            print(f"{name:8} {c:9} {row['before']:7.2f} {row['after']:7.2f} "
                  f"{row['report_before']:6.1f} ->{row['report_after']:5.1f} {row['diff_after']:6.2f}")
        print(f"{name:8} {'total':9} ratio {mean['total_ratio']:.4f} (report {REPORT_KEPT_FRACTION}), rare kept whole "
              f"{mean['rare_kept_whole']}, mean pass {mean['pass']}, every seed pass {corpus['pass']}")
        for label, run in [(f"seed {s}", r) for s, r in corpus["seeds"].items()] + [("expected", corpus["expected"])]:
            print(f"{'':8} {label:9} max diff after {run['max_diff_after']:5.2f} before {run['max_diff_before']:5.2f} "
                  f"ratio {run['total_ratio']:.4f} rare {','.join(run['rare'])} pass {run['pass']}")
    if result["timing"]:
        t = result["timing"]
        print(f"timing: {t['clips']} clips plan_counts {t['plan_counts_s']} s + assign_repeats {t['assign_repeats_s']} s")
    return result


if __name__ == "__main__":
    main()
