"""tasks.curate.datasets: threshold profiles as views of the scored pool, rejected_by, why_not."""

import numpy as np
import pandas as pd
import pytest
from synthetic_pool import publish, scored_pool, stage_ctx

from infra import manifest as mf
from infra.config import ConfigError
from infra.config_datasets import (
    DatasetsConfig,
    dataset_stage_config,
    load_columns,
    load_profile,
)
from tasks.curate import datasets

SPECS = {s.name: s for s in DatasetsConfig().specs}


def view(df, name, pipeline_profile="tiny", **columns):
    cfg = dataset_stage_config(SPECS[name], DatasetsConfig(columns=columns), pipeline_profile)
    return datasets.build_view(df, cfg)


def test_profiles_progress_loose_to_strict():
    names = {p: {r.name for r in load_profile(p).rules} for p in ("256p", "360p", "540p", "post")}
    assert {"dup", "black", "static", "mosaic", "sticker"} <= names["256p"]
    assert names["360p"] - names["256p"] == {"too_static", "too_chaotic", "text", "aesthetic", "short"}
    assert names["540p"] - names["360p"] == {"source", "subtitle", "logo", "border"}
    assert names["post"] == {"iqa", "vqa", "vtss"}
    assert load_profile("540p").crop_borders and not load_profile("360p").crop_borders
    pool = scored_pool(3000)
    kept = {d: set(pool.clip_id[view(pool, d)[f"in_{d}"]]) for d in ("D_256p", "D_360p", "D_540p")}
    assert kept["D_540p"] < kept["D_360p"] < kept["D_256p"] < set(pool.clip_id)
    assert len(kept["D_540p"]) > 0.2 * len(pool)


def test_rejected_by_lists_every_failing_rule():
    pool = scored_pool(4)
    cols = load_columns()
    clean = {"score_black": 0.0, "score_static": 0.0, "score_mosaic": 0.0, "score_sticker": 0.0, "score_text": 0.0,
             "score_subtitle": 0.0, "score_border": 0.0, "score_logo": 0.0, "dup_keep": True,
             "score_motion": 0.05, "score_duration": 4.0, "score_resolution": 720}
    for name, value in clean.items():
        pool[cols[name]] = value
    pool.loc[1, cols["score_black"]] = 1.0  # fails black in every profile
    pool.loc[1, cols["score_logo"]] = 0.9  # and logo (strict only)
    pool.loc[2, cols["score_text"]] = np.nan  # filter off: not applied by default
    pool.loc[3, "error"] = "decoding failed"
    v = view(pool, "D_540p")
    assert list(v.rejected_by[0]) == [] and v.in_D_540p[0]
    assert list(v.rejected_by[1]) == ["black", "logo"]
    assert list(v.rejected_by[2]) == [] and v.in_D_540p[2]
    assert list(v.rejected_by[3])[0] == "error" and not v.in_D_540p[3]
    assert list(view(pool, "D_256p").rejected_by[1]) == ["black"]  # loose: logos are allowed
    assert len(v) == len(pool) and list(v.clip_id) == list(pool.clip_id)  # a view: no row dropped
    cfg = dataset_stage_config(SPECS["D_540p"], DatasetsConfig(), "tiny")
    cfg.profile.missing = "reject"
    strict = datasets.build_view(pool, cfg)
    assert list(strict.rejected_by[2]) == ["text"] and "score_text=missing" in strict.rejected_detail[2][0]


def test_images_join_the_image_and_video_datasets_and_leave_at_540p():
    """Report 3.3: 256p and 360p train on images and videos jointly, 540p on videos. A still (a 1-frame
    clip, media=image) is not judged by rules that read time; a video with the same scores is."""
    pool = scored_pool(2)
    cols = load_columns()
    still = {"score_black": 0.0, "score_static": 0.0, "score_mosaic": 0.0, "score_sticker": 0.0, "score_text": 0.0,
             "score_subtitle": 0.0, "score_border": 0.0, "score_logo": 0.0, "dup_keep": True,
             "score_motion": 0.0, "score_duration": 1 / 24, "score_resolution": 720}
    for name, value in still.items():
        pool[cols[name]] = value
    pool["media"] = ["image", "video"]
    v360 = view(pool, "D_360p")
    assert v360.in_D_360p[0] and list(v360.rejected_by[0]) == []
    assert set(v360.rejected_by[1]) == {"too_static", "short"} and not v360.in_D_360p[1]
    assert view(pool, "D_256p").in_D_256p[0]
    v540 = view(pool, "D_540p")
    assert "short" in set(v540.rejected_by[0]) and not v540.in_D_540p[0]  # 540p trains on videos only


def test_column_mapping_is_config_and_missing_columns_fail_clearly():
    pool = scored_pool(50)
    actual = load_columns()["score_logo"]
    renamed = pool.rename(columns={actual: "logo_strength"})
    with pytest.raises(ConfigError, match="columns.yaml") as err:
        view(renamed, "D_540p")
    assert "score_logo" in str(err.value)
    same = view(renamed, "D_540p", score_logo="logo_strength")
    assert same.in_D_540p.equals(view(pool, "D_540p").in_D_540p)


def test_threshold_per_pipeline_profile():
    pool = scored_pool(200)
    cols = load_columns()
    res, aesthetic = cols["score_resolution"], cols["score_aesthetic"]
    pool.loc[:9, aesthetic] = 0.0
    tiny, big = view(pool, "D_540p", "tiny"), view(pool, "D_540p", "wan-14b")
    assert not tiny.rejected_by[pool[res] == 180].map(lambda r: "source" in r).any()
    assert big.rejected_by[pool[res] == 180].map(lambda r: "source" in r).all()
    assert not tiny.rejected_by.map(lambda r: "aesthetic" in r).any()  # off in tiny: a random head
    assert big.rejected_by[:10].map(lambda r: "aesthetic" in r).all()


def test_profile_may_not_loosen_what_it_extends(tmp_path):
    (tmp_path / "columns.yaml").write_text("score_black: score_black\n")
    (tmp_path / "loose.yaml").write_text("rules: [{name: black, column: score_black, op: '<=', value: 0.1}]\n")
    (tmp_path / "strict.yaml").write_text(
        "extends: loose\nrules: [{name: black, column: score_black, op: '<=', value: 0.3}]\n")
    with pytest.raises(ConfigError, match="loosens inherited rule 'black'"):
        load_profile("strict", tmp_path)
    (tmp_path / "bad.yaml").write_text("rules: [{name: black, column: score_black, op: '=', value: 1}]\n")
    with pytest.raises(ConfigError, match="rules.0.op"):
        load_profile("bad", tmp_path)


def test_why_not_answers_in_one_line():
    pool = scored_pool(300)
    v = view(pool, "D_540p")
    inside = v[v.in_D_540p].clip_id.iloc[0]
    outside = v[v.rejected_by.map(len) >= 2].iloc[0]
    assert datasets.why_not(v, "D_540p", inside) == f"clip {inside} is in D_540p: it passes every rule of the profile"
    line = datasets.why_not(v, "D_540p", outside.clip_id[:10])
    assert "\n" not in line and line.startswith(f"clip {outside.clip_id} is not in D_540p: ")
    for detail in outside.rejected_detail:
        assert detail in line
    assert "no such clip_id" in datasets.why_not(v, "D_540p", "ffffffffffffffff0")
    assert "ambiguous" in datasets.why_not(v, "D_540p", v.clip_id[0][:1])


def test_dataset_over_a_base_dataset():
    pool = scored_pool(100)
    pool["in_D_post"] = [i % 2 == 0 for i in range(100)]
    v = view(pool, "D_540p_sft")
    assert not v.in_D_540p_sft[1::2].any()
    assert all(r[0] == "not_in_D_post" for r in v.rejected_by[1::2])
    assert "not in D_post" in datasets.why_not(v, "D_540p_sft", v.clip_id[1])


def test_stage_publishes_view_and_resumes(make_cfg, tmp_path):
    ctx = stage_ctx(make_cfg(), tmp_path)
    pool = publish(ctx, scored_pool(500))
    cfg = dataset_stage_config(SPECS["D_360p"], DatasetsConfig(), "tiny")
    m = datasets.run(ctx, cfg, pool)
    table = mf.read_table(m)
    assert m.stage == "D_360p" and m.row_count == 500 and m.stats["kept"] == int(table.in_D_360p.sum())
    line = datasets.why_not_in_run(ctx.cfg, "r1", "D_360p", table.clip_id[0][:8])  # reelflow inspect --why
    assert line.startswith(f"clip {table.clip_id[0]} is") and "\n" not in line
    with pytest.raises(FileNotFoundError, match="not a dataset"):
        datasets.why_not_in_run(ctx.cfg, "r1", "score", table.clip_id[0])
    assert datasets.build_dataset(ctx, DatasetsConfig(), "D_360p", pool) == m
    assert datasets.run(ctx, cfg, pool) == m  # same profile, same pool: skipped
    tighter = cfg.model_copy(deep=True)
    tighter.profile.rules[0].value = 0.1
    assert datasets.run(ctx, tighter, pool).fingerprint != m.fingerprint
    runs = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`reelflow.stage` = 'D_360p'")
    metrics = runs[0].data.metrics
    assert metrics["kept"] + metrics["rejected"] == 500 and "rejected.aesthetic" in metrics
    assert isinstance(table.rejected_by[0], np.ndarray | list) and isinstance(table, pd.DataFrame)


def _reviewed_base(make_cfg, tmp_path):
    """A D_540p_sft table over one generated film (one clip per truth shot, the last one outside)."""
    from tasks.corpus import generate_video

    cfg = make_cfg("corpus.width=160", "corpus.height=90", "corpus.shots_per_video=[7,7]", "corpus.defect_rate=0.6")
    truth = generate_video("film_0000", 5, cfg.corpus, str(tmp_path / "corpus"))
    src = str(tmp_path / "corpus" / "film_0000.mp4")
    rows = pd.DataFrame([{"clip_id": f"{s.index:016x}", "source_uri": src, "start_frame": s.start_frame,
                          "end_frame": s.end_frame, "clip_uri": None, "error": None, "category": s.category,
                          "in_D_540p_sft": s.index < len(truth.shots) - 1} for s in truth.shots])
    ctx = stage_ctx(cfg, tmp_path)
    return ctx, truth, publish(ctx, rows, "D_540p_sft")


def test_manual_filter_keeps_what_the_review_marked_good(make_cfg, tmp_path):
    """D_720p_sft = ManualFilter(D_540p_sft): simulated reviewers label every clip from the corpus truth;
    the dataset is exactly the clean clips of D_540p_sft, and --why names the reviewer's reason."""
    from infra.audit_store import list_audits
    from infra.config_datasets import AuditConfig
    from tasks.curate.lib.audit import DEFECT_REASON

    ctx, truth, base = _reviewed_base(make_cfg, tmp_path)
    m = datasets.build_dataset(ctx, DatasetsConfig(), "D_720p_sft", base, AuditConfig(mode="simulated"))
    table = mf.read_table(m)
    last = len(truth.shots) - 1
    defective = {s.index for s in truth.shots if any(
        d.kind in DEFECT_REASON and d.start_frame < s.end_frame and d.end_frame > s.start_frame for d in truth.defects)}
    assert 0 < len(defective) < last
    assert set(table.clip_id[table.in_D_720p_sft]) == {f"{i:016x}" for i in range(last) if i not in defective}
    assert table.rejected_by.iloc[last][0] == "not_in_D_540p_sft"
    bad = f"{min(defective):016x}"
    line = datasets.why_not_in_run(ctx.cfg, "r1", "D_720p_sft", bad)
    assert line.startswith(f"clip {bad} is not in D_720p_sft: manual (manual_good=0") and "reviewer: " in line
    (review,) = [a for a in list_audits(ctx.run_uri) if a.gate == "D_720p_sft_manual"]
    assert review.simulated and len(review.clips) == last and m.stats["review"] == review.audit_id
    # Audit off: nobody reviewed, nothing is marked Good, so nothing is kept (never silently everything).
    off = datasets.build_dataset(ctx, DatasetsConfig(), "D_720p_sft", base, AuditConfig(mode="off"))
    assert not mf.read_table(off).in_D_720p_sft.any()


def test_manual_filter_reads_a_verdicts_file(make_cfg, tmp_path):
    import json

    from infra.config_datasets import AuditConfig

    ctx, truth, base = _reviewed_base(make_cfg, tmp_path)
    ids = [f"{s.index:016x}" for s in truth.shots[:-1]]
    verdicts = [{"clip_id": c, "verdict": "good" if i % 2 else "bad", "reason": None if i % 2 else "other"}
                for i, c in enumerate(ids)]
    path = tmp_path / "verdicts.json"
    path.write_text(json.dumps({"D_720p_sft_manual": verdicts}))
    m = datasets.build_dataset(ctx, DatasetsConfig(), "D_720p_sft", base,
                               AuditConfig(mode="file", verdicts_file=str(path)))
    assert set(mf.read_table(m).clip_id[mf.read_table(m).in_D_720p_sft]) == set(ids[1::2])


def test_manual_filter_keeps_clips_whose_bad_reason_the_profile_tolerates():
    from infra.audit_store import Verdict
    from tasks.curate.datasets import tolerate

    verdicts = {"a": Verdict(clip_id="a", verdict="bad", reason="wrong caption", reviewer="r"),
                "b": Verdict(clip_id="b", verdict="bad", reason="mosaic", reviewer="r"),
                "c": Verdict(clip_id="c", verdict="good", reviewer="r")}
    kept = tolerate(verdicts, ["wrong caption"])
    assert [kept[k].verdict for k in "abc"] == ["good", "bad", "good"]
    assert "tolerated" in kept["a"].note and verdicts["a"].verdict == "bad"
