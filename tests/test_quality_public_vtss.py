"""Koala-36M's Training Suitability Assessment checkpoint format (models.vtss_koala): a tiny checkpoint of the
public layout loads and reproduces a hand-computed VTSS; the score stage runs with both checkpoint paths set
and writes the checkpoint models' scores; without them the hand formulas stay the default."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bad_inputs import encode

from infra.config_filters import QualityConfig, ScoreConfig
from models.vqa_fast import FAST_VQA_RESCALE
from models.vtss_koala import KoalaVTSS, koala_clip_indices
from tasks.curate.filters import FRAME_FILTERS, BasicFilter, build_filters
from tasks.curate.filters.quality import VTSSFilter
from tasks.curate.score import score_clip
from tests.test_quality_public_vqa import constant_feature_state, head_by_hand


def test_koala_temporal_sampling_by_hand():
    # 100 frames, 2 segments of 50; runs of 4 at stride 2 span 8: slack 42, centred start 21
    assert koala_clip_indices(100, 4, 2, 2).tolist() == [21, 23, 25, 27, 71, 73, 75, 77]
    # 6 frames: segments of 3, no slack: runs start at 0 and 3 and wrap around the clip
    assert koala_clip_indices(6, 4, 2, 2).tolist() == [0, 2, 4, 0, 3, 5, 1, 3]


def test_koala_vtss_loads_a_tiny_public_checkpoint_and_scores_by_hand(tmp_path):
    sd, beta = constant_feature_state(seed=5)
    torch.save({"state_dict": sd}, tmp_path / "infer.pth")  # the release: ckpt/infer.pth, {"state_dict": ...}
    frames = np.random.default_rng(2).integers(0, 256, (9, 226, 300, 3), dtype=np.uint8)
    raw, score = KoalaVTSS(str(tmp_path / "infer.pth"), mean=0.2, std=0.5, clip_len=4, num_clips=2,
                           device="cpu").score(frames)
    expected = head_by_hand(sd, beta)
    assert raw == pytest.approx(expected, abs=1e-5)
    assert score == pytest.approx(1 / (1 + math.exp(-(expected - 0.2) / 0.5)), abs=1e-6)
    with pytest.raises(ValueError, match="std must be > 0"):
        KoalaVTSS(str(tmp_path / "infer.pth"), std=0.0)


def _row(path: str, n: int, w: int, h: int) -> dict:
    return {"clip_id": "c0", "source_id": "s0", "source_uri": path, "media": "video", "shot_id": "s0-0",
            "start_frame": 0, "end_frame": n, "fps": 24.0, "width": w, "height": h, "num_frames": n,
            "clip_uri": path, "error": None}


def test_the_score_stage_uses_both_checkpoints_when_their_paths_are_set(tmp_path):
    vqa_sd, vqa_beta = constant_feature_state(seed=1)
    koala_sd, koala_beta = constant_feature_state(seed=2)
    torch.save({"state_dict": vqa_sd}, tmp_path / "fast_vqa.pth")
    torch.save({"state_dict": koala_sd}, tmp_path / "koala.pth")
    clip = encode(str(tmp_path / "clip.mp4"), n=24, w=96, h=64)
    only_quality = {name: {"enabled": False} for name in FRAME_FILTERS if name != "quality"}
    quality = {"vqa_checkpoint_path": str(tmp_path / "fast_vqa.pth"),
               "vtss_checkpoint_path": str(tmp_path / "koala.pth"),
               "vtss_raw_mean": 0.1, "vtss_raw_std": 0.3, "checkpoint_clip_len": 4, "checkpoint_clips": 1}
    cfg = ScoreConfig.model_validate({**only_quality, "quality": quality})
    row = score_clip(_row(clip, 24, 96, 64), build_filters(cfg), cfg, BasicFilter(), VTSSFilter(cfg.quality))
    assert row["error"] is None
    mean, std = FAST_VQA_RESCALE
    assert row["score_vqa"] == pytest.approx(1 / (1 + math.exp(-(head_by_hand(vqa_sd, vqa_beta) - mean) / std)),
                                             abs=1e-4)
    assert row["score_vtss"] == pytest.approx(1 / (1 + math.exp(-(head_by_hand(koala_sd, koala_beta) - 0.1) / 0.3)),
                                              abs=1e-5)
    # without the paths: the CPU default formulas (VQA = IQA x temporal consistency; VTSS = the prior logistic)
    plain = ScoreConfig.model_validate(only_quality)
    base = score_clip(_row(clip, 24, 96, 64), build_filters(plain), plain, BasicFilter(), VTSSFilter(plain.quality))
    assert base["score_vqa"] == pytest.approx(base["score_iqa"] * math.exp(-base["score_flicker"] / 4.0))
    assert base["score_vtss"] != pytest.approx(row["score_vtss"], abs=1e-3)


def test_a_missing_checkpoint_file_fails_at_preflight_and_at_build_with_the_setting(make_cfg, tmp_path):
    from flows.preflight import PreflightError, check_paths

    absent = str(tmp_path / "fast_vqa.pth")
    with pytest.raises(PreflightError, match=r"^stages\.score\.quality\.vtss_checkpoint_path: .* does not exist"):
        check_paths(make_cfg(f"stages.score.quality.vtss_checkpoint_path={absent}"))
    cfg = ScoreConfig(quality=QualityConfig(vqa_checkpoint_path=absent))
    with pytest.raises(FileNotFoundError, match="fast_vqa.pth: no such checkpoint file"):
        build_filters(cfg, names=("quality",))
