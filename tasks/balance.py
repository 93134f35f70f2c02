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
import pandas as pd
import pyarrow as pa

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


def categorize(df: pd.DataFrame, cfg: BalanceConfig) -> tuple[pd.Series, pd.Series]:
    """(category, category_source) for the rows of ``df``: caption first, zero-shot for the rest."""
    column = df[cfg.category_column] if cfg.category_column in df.columns else pd.Series(None, index=df.index)
    category = column.astype("string").str.strip().str.lower().replace("", pd.NA)
    source = pd.Series(np.where(category.notna(), "caption", None), index=df.index, dtype=object)
    todo = df[category.isna()]
    if len(todo):
        items = todo[["clip_id", "clip_uri", "num_frames"]].to_dict("records")
        table = flat_map_items(items, ZeroShotWorker, {"cfg": cfg.classifier.model_dump(), "labels": list(cfg.target)},
                               ZERO_SHOT_SCHEMA).to_pandas()
        found = dict(zip(table.clip_id, table.category, strict=True))
        category.loc[todo.index] = todo.clip_id.map(found)
        source.loc[todo.index] = "zero_shot"
    return category.astype(object), source


def balance(df: pd.DataFrame, cfg: BalanceConfig, eligible: pd.Series) -> tuple[pd.DataFrame, dict]:
    """Pure part of the stage: ``df`` with balance_repeat / in_D_post, and the before/after summary."""
    out = df.copy()
    pool = out[eligible]
    cats = pool["category"].tolist()
    plan = plan_counts(Counter(cats), cfg.target, cfg.keep_fraction, cfg.max_repeat)
    repeats = assign_repeats(pool["clip_id"].tolist(), cats, plan, cfg.seed)
    out["balance_repeat"] = 0
    out.loc[pool.index, "balance_repeat"] = repeats
    out[f"in_{NAME}"] = out["balance_repeat"] > 0
    n = max(len(pool), 1)
    summary = {
        "clips_before": len(pool),
        "samples_after": int(repeats.sum()),
        "unique_after": int((repeats > 0).sum()),
        "kept_samples_fraction": float(repeats.sum()) / n,
        "kept_unique_fraction": float((repeats > 0).sum()) / n,
        "before": shares(cats),
        "after": shares(cats, repeats),
        "plan": plan,
    }
    return out, summary


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
        df = mf.read_table(source).reset_index(drop=True)
        flag = f"in_{cfg.source}"
        if flag not in df.columns:
            raise ValueError(f"{NAME} balances {cfg.source}, but input {source.stage!r} has no column {flag}")
        eligible = df[flag].fillna(False).astype(bool)
        cats, where = categorize(df[eligible], cfg)
        carried = df[cfg.category_column] if cfg.category_column in df.columns else None
        df["category"] = cats.reindex(df.index).where(eligible, carried)  # others keep their caption's
        df["category_source"] = where.reindex(df.index)
        out, summary = balance(df, cfg, eligible)
        for key in ("clips_before", "samples_after", "unique_after", "kept_samples_fraction", "kept_unique_fraction"):
            work.metrics[key] = summary[key]
        for when in ("before", "after"):
            for cat, share in summary[when].items():
                work.metrics[f"share_{when}.{cat}"] = share
        work.metrics["zero_shot_clips"] = int((out["category_source"] == "zero_shot").sum())
        work.stats.update({k: summary[k] for k in ("clips_before", "samples_after", "unique_after", "plan")})
        chart = plot_balance(summary["before"], summary["after"], os.path.join(work.scratch_dir, "balance.png"),
                             f"{cfg.source} -> {NAME}: {summary['clips_before']} clips -> {summary['samples_after']} samples")
        work.artifacts.append(chart)
        return pa.Table.from_pandas(out, preserve_index=False)

    return run_stage(ctx, NAME, cfg, [source], body)
