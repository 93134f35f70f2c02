"""Concept balancing: the report's Figure 5 effect (Human 84.8% -> 55.3%, total about -50%)."""

import os
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from synthetic_pool import clip_ids, draw_categories, publish, stage_ctx

from infra import manifest as mf
from infra.config_datasets import BalanceConfig
from infra.video import write_video
from models.balance import REPORT_AFTER, REPORT_BEFORE, assign_repeats, plan_counts, shares
from tasks.corpus.lib.sprites import CATEGORY_WEIGHTS
from tasks.curate import balance

CFG = BalanceConfig()
RARE = ("architecture", "vehicle", "object")


def balanced(cats, cfg=CFG, seed=0):
    plan = plan_counts(Counter(cats), cfg.target, cfg.keep_fraction, cfg.max_repeat)
    return assign_repeats(clip_ids(len(cats)), cats, plan, seed)


def check_report_effect(cats):
    repeats = balanced(cats)
    before, after = shares(cats), shares(cats, repeats)
    assert before["human"] > 0.8
    assert abs(after["human"] - REPORT_AFTER["human"]) <= 0.03, after  # report: 84.8% -> 55.3%
    assert abs(repeats.sum() / len(cats) - 0.5) <= 0.03  # report: total reduced about 50%
    arr = np.array(cats)
    for cat in RARE:  # rare classes are kept whole
        assert (repeats[arr == cat] >= 1).all(), cat
    assert repeats[arr == "human"].max() == 1  # the dominant class is only ever subsampled
    return before, after


def test_report_skew_reproduces_figure_5():
    before, after = check_report_effect(draw_categories(20000, REPORT_BEFORE, seed=3))
    assert abs(before["human"] - 0.848) < 0.01
    assert abs(after["scenery"] - 0.14) <= 0.03  # capped at its target like Human
    assert all(after[c] > before[c] for c in before if c != "human")


def test_corpus_skew_and_corpus_truth_categories():
    check_report_effect(draw_categories(20000, CATEGORY_WEIGHTS, seed=4))
    from infra.config import CorpusConfig
    from tasks.corpus.lib.films import plan_video, video_id_for, video_seed_for

    cats = [s.category for i in range(30)
            for s in plan_video(video_id_for(i), video_seed_for(0, i), CorpusConfig()).truth.shots]
    check_report_effect(cats)


def test_pure_subsampling_bound():
    """max_repeat=1: nothing repeats, rare classes whole, and Human cannot reach 55% at -50%."""
    cats = draw_categories(20000, REPORT_BEFORE, seed=5)
    cfg = CFG.model_copy(update={"max_repeat": 1})
    repeats = balanced(cats, cfg)
    assert repeats.max() == 1
    arr = np.array(cats)
    for cat in RARE:
        assert repeats[arr == cat].all()
    human = shares(cats, repeats)["human"]
    assert 0.6 < human < 0.75 and repeats.sum() < 0.5 * len(cats)


def test_benchmark_measure_fails_an_unbalanced_result():
    """benchmarks/balance.py: seeded draws, rare classes decided before balancing, and a pass that can fail."""
    from benchmarks.balance import draw_categories as bench_draw
    from benchmarks.balance import measure

    cats = bench_draw(4000, CATEGORY_WEIGHTS, seed=8)
    assert cats == bench_draw(4000, CATEGORY_WEIGHTS, seed=8) != bench_draw(4000, CATEGORY_WEIGHTS, seed=9)
    good = measure(cats, CFG, check_before=False)
    row = good["report"]["human"]
    assert good["pass"] and row["diff_after"] == round(abs(row["after"] - 100 * REPORT_AFTER["human"]), 3)
    bounded = measure(cats, CFG.model_copy(update={"max_repeat": 1}), check_before=False)  # pure subsampling
    assert not bounded["pass"] and bounded["report"]["human"]["diff_after"] > 3
    assert set(RARE) <= set(bounded["rare"]) and all(bounded["rare_kept_whole"].values())


def test_seeded_order_independent_and_nested():
    cats = draw_categories(3000, REPORT_BEFORE, seed=6)
    ids = clip_ids(3000)
    plan = plan_counts(Counter(cats), CFG.target, 0.5, 5)
    a = dict(zip(ids, assign_repeats(ids, cats, plan, seed=1), strict=True))
    order = np.random.default_rng(0).permutation(3000)
    b = dict(zip([ids[i] for i in order],
                 assign_repeats([ids[i] for i in order], [cats[i] for i in order], plan, seed=1), strict=True))
    assert a == b
    c = dict(zip(ids, assign_repeats(ids, cats, plan, seed=2), strict=True))
    assert a != c and sum(a.values()) == sum(c.values())
    bigger = plan_counts(Counter(cats), CFG.target, 0.7, 5)
    d = dict(zip(ids, assign_repeats(ids, cats, bigger, seed=1), strict=True))
    assert all(d[k] >= v for k, v in a.items() if v)  # a larger budget keeps a superset


def test_stage_uses_caption_categories_else_zero_shot(make_cfg, tmp_path, monkeypatch):
    ctx = stage_ctx(make_cfg(), tmp_path)
    clip_dir = tmp_path / "clips"
    os.makedirs(clip_dir)
    rng = np.random.default_rng(0)
    n = 400
    cats = draw_categories(n, CATEGORY_WEIGHTS, seed=7)
    df = pd.DataFrame({"clip_id": clip_ids(n), "clip_uri": None, "num_frames": 12, "error": None,
                       "category": [c.upper() for c in cats], "in_D_540p": True})
    df.loc[n - 10:, "in_D_540p"] = False  # not in the source dataset: never sampled
    for i in (0, 1):  # no caption category: the zero-shot classifier decides
        path = str(clip_dir / f"{i}.mp4")
        write_video((rng.integers(0, 255, (36, 64, 3), dtype=np.uint8) for _ in range(12)), path, 24)
        df.loc[i, ["category", "clip_uri"]] = [None, path]

    def local_flat_map(items, worker_cls, kwargs, schema, resources, stage):  # the Ray-free equivalent
        worker = worker_cls(**kwargs)
        import pyarrow as pa

        return pa.Table.from_pylist([r for item in items for r in worker(item)], schema=schema)

    monkeypatch.setattr(balance, "flat_map_items", local_flat_map)
    cfg = BalanceConfig(classifier={"cache_dir": str(tmp_path / "models")})
    m = balance.run(ctx, cfg, publish(ctx, df, "D_540p"))
    out = mf.read_table(m)
    assert list(out.category_source[:2]) == ["zero_shot"] * 2 and set(out.category[:2]) <= set(cfg.target)
    assert (out.category_source[2 : n - 10] == "caption").all() and out.category[5] == cats[5]
    assert not out.in_D_post[n - 10 :].any() and (out.balance_repeat[n - 10 :] == 0).all()
    assert out.category[n - 1] == cats[n - 1].upper()  # outside the source dataset: carried as captioned
    after = shares(out.category[out.in_D_post].tolist(), out.balance_repeat[out.in_D_post].tolist())
    assert abs(after["human"] - 0.553) <= 0.03
    runs = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`reelflow.stage` = 'D_post'")
    metrics = runs[0].data.metrics
    assert metrics["share_before.human"] > 0.8 and metrics["zero_shot_clips"] == 2
    assert abs(metrics["kept_samples_fraction"] - 0.5) < 0.03
    assert "balance.png" in {a.path for a in ctx.tracker.client.list_artifacts(runs[0].info.run_id)}


def test_chart_is_a_png(tmp_path):
    path = balance.plot_balance({"human": 0.85, "animal": 0.15}, {"human": 0.55, "animal": 0.45}, str(tmp_path / "b.png"))
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("target", [{}, {"human": 0.0}, {"human": -1}])
def test_bad_targets_fail_before_work(target):
    with pytest.raises(ValueError, match="target"):
        BalanceConfig(target=target)
