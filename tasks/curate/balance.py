"""Stage ``D_post``: concept balancing of D_540p (report section 3.1: ``D_post = ConceptBalance(D_540p)``).

Each clip of the source dataset gets a subject ``category``: the caption's when it has one
(``category_source = caption``), else a zero-shot CLIP classifier over a few of its frames
(``zero_shot``; Ray actor pool, the model loads once per actor). ``models.balance`` then decides
how many samples each category keeps; every row gets ``balance_repeat`` (0 = dropped, 2 = this rare
clip is sampled twice) and ``in_D_post``. Before/after shares go to MLflow as metrics and a chart.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from infra import manifest as mf
from infra import storage
from infra.config_datasets import BalanceConfig, ZeroShotConfig
from infra.manifest import Manifest
from infra.raydata import flat_map_items
from infra.stage import StageContext, StageWork, run_stage
from infra.video import iter_frames
from models.balance import assign_repeats, plan_counts, shares

NAME = "D_post"
ZERO_SHOT_SCHEMA = pa.schema([("clip_id", pa.string()), ("category", pa.string()), ("category_prob", pa.float64())])


def clip_frames(clip_uri: str, num_frames: int, count: int) -> list[np.ndarray]:
    """``count`` RGB frames spread evenly over a clip (one decode)."""
    wanted = set(np.linspace(0, max(num_frames - 1, 0), count).round().astype(int).tolist())
    with storage.local_copy(clip_uri) as path:
        return [f for i, f in iter_frames(path, 0, max(wanted) + 1) if i in wanted]


class ZeroShotWorker:
    """Ray actor body: the CLIP towers load once; one clip in, one category row out."""

    def __init__(self, cfg: dict, labels: list[str]):
        from models.zero_shot import ZeroShotClassifier, build_tiny_clip

        self.cfg = ZeroShotConfig.model_validate(cfg)
        path = self.cfg.model_path or build_tiny_clip(os.path.join(os.path.abspath(self.cfg.cache_dir), "tiny-clip"))
        self.model = ZeroShotClassifier(path, self.cfg.prompt)
        self.labels = labels

    def __call__(self, item: dict) -> list[dict]:
        frames = clip_frames(item["clip_uri"], int(item["num_frames"]), self.cfg.frames)
        (label,), probs = self.model.classify([frames], self.labels)
        return [{"clip_id": item["clip_id"], "category": label, "category_prob": float(probs.max())}]


def categorize(table: pa.Table, eligible: np.ndarray, cfg: BalanceConfig) -> tuple[pa.Array, pa.Array]:
    """(category, category_source) for every row: the caption's category (trimmed, lower case) for the
    eligible rows that have one, zero-shot for the eligible rest (only those rows go to the classifier),
    the caption's as it is for the others (source null)."""
    n = table.num_rows
    carried = pc.cast(table.column(cfg.category_column), pa.string()) if cfg.category_column in table.column_names \
        else pa.nulls(n, pa.string())
    carried = carried.combine_chunks() if isinstance(carried, pa.ChunkedArray) else carried
    norm = pc.utf8_lower(pc.utf8_trim_whitespace(carried))
    norm = pc.if_else(pc.fill_null(pc.equal(norm, ""), False), pa.nulls(n, pa.string()), norm)
    missing = eligible & pc.is_null(norm).to_numpy(zero_copy_only=False)
    category = np.asarray(pc.if_else(pa.array(eligible), norm, carried).to_pylist(), dtype=object)
    source = np.where(eligible & ~missing, "caption", None).astype(object)
    if missing.any():
        todo = table.filter(pa.array(missing)).select(["clip_id", "clip_uri", "num_frames"]).to_pylist()
        found = flat_map_items(todo, ZeroShotWorker, {"cfg": cfg.classifier.model_dump(), "labels": list(cfg.target)},
                               ZERO_SHOT_SCHEMA, cfg.resources, stage="balance")
        by_id = dict(zip(found.column("clip_id").to_pylist(), found.column("category").to_pylist(), strict=True))
        category[missing] = [by_id.get(r["clip_id"]) for r in todo]
        source[missing] = "zero_shot"
    return pa.array(category, pa.string()), pa.array(source, pa.string())


def balance(clip_ids: list[str], categories: list[str], cfg: BalanceConfig) -> tuple[np.ndarray, dict]:
    """Pure part of the stage: repeats of the eligible clips and the before/after summary."""
    plan = plan_counts(Counter(categories), cfg.target, cfg.keep_fraction, cfg.max_repeat)
    repeats = assign_repeats(clip_ids, categories, plan, cfg.seed)
    n = max(len(clip_ids), 1)
    summary = {
        "clips_before": len(clip_ids),
        "samples_after": int(repeats.sum()),
        "unique_after": int((repeats > 0).sum()),
        "kept_samples_fraction": float(repeats.sum()) / n,
        "kept_unique_fraction": float((repeats > 0).sum()) / n,
        "before": shares(categories),
        "after": shares(categories, repeats),
        "plan": plan,
    }
    return repeats, summary


def _put(table: pa.Table, name: str, column) -> pa.Table:
    """Replace ``name`` in place (same position) or append it."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, column)
    return table.append_column(name, column)


def plot_balance(before: dict[str, float], after: dict[str, float], path: str, title: str = "") -> str:
    """Grouped bars of category shares before / after balancing (report Figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = sorted(set(before) | set(after), key=lambda c: -before.get(c, 0))
    x = np.arange(len(cats))
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for offset, (label, data) in zip((-0.2, 0.2), (("before", before), ("after", after)), strict=True):
        bars = ax.bar(x + offset, [100 * data.get(c, 0) for c in cats], 0.4, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, cats)
    ax.set_ylabel("share of samples (%)")
    ax.set_title(title or "concept balance")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run(ctx: StageContext, cfg: BalanceConfig, source: Manifest) -> Manifest:
    """Stage ``D_post``: the source dataset's table + category, balance_repeat, in_D_post."""

    def body(work: StageWork) -> pa.Table:
        table = mf.read_arrow(source)  # Arrow all the way: no pandas copy of the dataset
        flag = f"in_{cfg.source}"
        if flag not in table.column_names:
            raise ValueError(f"{NAME} balances {cfg.source}, but input {source.stage!r} has no column {flag}")
        eligible = pc.fill_null(pc.cast(table.column(flag), pa.bool_()), False).to_numpy(zero_copy_only=False)
        category, where = categorize(table, eligible, cfg)
        mask = pa.array(eligible)
        repeats, summary = balance(pc.cast(table.column("clip_id"), pa.string()).filter(mask).to_pylist(),
                                   category.filter(mask).to_pylist(), cfg)
        balance_repeat = np.zeros(table.num_rows, np.int64)
        balance_repeat[eligible] = repeats
        out = _put(_put(table, "category", category), "category_source", where)
        out = _put(_put(out, "balance_repeat", pa.array(balance_repeat)), f"in_{NAME}", pa.array(balance_repeat > 0))
        for key in ("clips_before", "samples_after", "unique_after", "kept_samples_fraction", "kept_unique_fraction"):
            work.metrics[key] = summary[key]
        for when in ("before", "after"):
            for cat, share in summary[when].items():
                work.metrics[f"share_{when}.{cat}"] = share
        work.metrics["zero_shot_clips"] = int(pc.sum(pc.equal(where, "zero_shot")).as_py() or 0)
        work.stats.update({k: summary[k] for k in ("clips_before", "samples_after", "unique_after", "plan")})
        chart = plot_balance(summary["before"], summary["after"], os.path.join(work.scratch_dir, "balance.png"),
                             f"{cfg.source} -> {NAME}: {summary['clips_before']} clips -> {summary['samples_after']} samples")
        work.artifacts.append(chart)
        return out

    return run_stage(ctx, NAME, cfg, [source], body)
