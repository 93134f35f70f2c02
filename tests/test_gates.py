"""The loose profile against the simulated reviewer on a real scored pool (issue 13: the D_256p gate
failed because the BasicFilter let through defects the reviewer sees). The full check, every gate of
corpus seeds 0-4 through the pipeline, is benchmarks/gates.py; this one is its cheap core: a small
generated corpus cut at its true shots, scored by the BasicFilter's element filters, filtered by
configs/filters/256p.yaml, judged by the same simulated reviewer as ``--audit simulated``."""

from __future__ import annotations

import pandas as pd
import pytest

BASIC_REASONS = {"black", "static", "mosaic", "effects/stickers"}  # report 3.1: the BasicFilter's elements
SEED, VIDEOS = 7, 3  # not a gates seed (0-4) nor the filters benchmark's held-out 0 and 21


@pytest.mark.slow
def test_loose_profile_removes_every_basic_defect_the_reviewer_sees(tmp_path):
    import cv2

    from benchmarks.filters import build_clips
    from infra.config_datasets import load_columns, load_profile
    from infra.config_filters import ScoreConfig
    from tasks.curate.datasets import apply_profile
    from tasks.curate.filters import BasicFilter, build_filters
    from tasks.curate.filters.quality import VTSSFilter
    from tasks.curate.lib.audit import clip_truth
    from tasks.curate.score import score_clip

    cv2.setNumThreads(1)
    clips = build_clips(str(tmp_path / "corpus"), str(tmp_path / "clips"), VIDEOS, SEED, truth_cuts=True)
    cfg = ScoreConfig(text={"enabled": False}, logo={"enabled": False}, aesthetic={"enabled": False},
                      dedup={"enabled": False}, motion={"enabled": False}, quality={"enabled": False})
    filters = build_filters(cfg)
    assert set(filters) == {"black", "static", "mosaic", "border", "sticker"}
    rows = [score_clip(c, filters, cfg, BasicFilter(), VTSSFilter(cfg.quality)) for c in clips]
    rows = [r | {"dup_keep": True} for r in rows]  # copies are the dedup filter's, not part of this check
    rejected, _ = apply_profile(pd.DataFrame(rows), load_profile("256p"), load_columns(), "tiny")
    seen = [set(clip_truth(r)["reasons"]) & BASIC_REASONS for r in rows]
    defective = [k for k, s in enumerate(seen) if s]
    assert {r for s in seen for r in s} == BASIC_REASONS  # the corpus plants every kind: the check can fail
    kept_bad = [(rows[k]["clip_id"], seen[k]) for k in defective if not rejected[k]]
    assert kept_bad == []
    others = [k for k, s in enumerate(seen) if not s]  # clean, or defects of later filters (text, quality)
    wrongly = [rows[k]["clip_id"] for k in others if rejected[k]]
    assert len(others) >= 10 and len(wrongly) <= 0.1 * len(others)
