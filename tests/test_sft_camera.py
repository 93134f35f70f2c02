"""sft-camera's data (report section 5.5, Camera Director; issue 19 item 3): camera classes from the camera
expert's labels, balanced with concept balancing's plan (models/balance.py), and the D_camera view a training
stage reads (each kept clip repeated as often as planned)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from synthetic_pool import publish, stage_ctx

from infra import manifest as mf
from infra.config import load_config
from infra.config_post import CameraBalanceConfig
from models import camera_balance as cb
from models.balance import assign_repeats, plan_counts


def motion(**axes) -> dict:
    speed = axes.pop("speed", "slow")
    return {**{a: "0" for a in cb.AXES}, **axes, "speed": speed, "handheld": False, "abrupt_change": False}


# A skewed pool as real footage is: mostly static, many slow pans, few dolly-ins, one fast roll.
POOL = [motion(speed="static")] * 60 + [motion(yaw="+")] * 25 + [motion(yaw="-", tz="+", speed="medium")] * 10 \
    + [motion(tz="+", speed="fast")] * 4 + [motion(roll="+", speed="fast")]


def test_camera_classes_read_the_6dof_signs_and_speed():
    assert cb.camera_class(motion(speed="static")) == "static"
    assert cb.camera_class(motion(yaw="+", speed="static")) == "static"  # no speed: no move
    assert cb.camera_class(motion(yaw="-", tz="+", speed="medium")) == "tz+ yaw-/medium"
    shares = cb.label_shares([motion(yaw="-", tz="+", speed="medium"), motion(speed="static")])
    assert shares["move"] == {"none": 1 / 3, "tz+": 1 / 3, "yaw-": 1 / 3}
    assert shares["speed"] == {"medium": 0.5, "static": 0.5}


def test_balancing_flattens_the_classes_with_concept_balancings_plan():
    ids = [f"c{i}" for i in range(len(POOL))]
    repeats, summary = cb.balance_camera(ids, POOL, keep_fraction=0.5, max_repeat=3, seed=0)
    classes = [cb.camera_class(m) for m in POOL]
    # the same numbers models.balance gives for these classes with a uniform target
    counts = pd.Series(classes).value_counts().to_dict()
    plan = plan_counts(counts, dict.fromkeys(counts, 1.0), 0.5, 3)
    assert summary["plan"] == plan
    assert repeats == assign_repeats(ids, classes, plan, 0).tolist()
    # budget 50 = 10 per class: the rare classes even repeated 3x (12 + 3) cannot fill theirs, so 45 (as D_post)
    assert summary["samples_after"] == sum(plan.values()) == 45
    before, after = summary["before"]["class"], summary["after"]["class"]
    assert before["static"] == 0.6 and after["static"] < 0.3
    assert cb.imbalance(after) < cb.imbalance(before) / 5
    assert after["roll+/fast"] == pytest.approx(3 / 45)  # the rare class, repeated max_repeat times
    assert sum(after.values()) == pytest.approx(1.0)
    assert max(repeats) == 3 and min(repeats) == 0


def test_the_view_repeats_kept_clips_and_records_the_shares(tmp_path):
    from tasks.post import sft_camera

    cfg = load_config("tiny", [f"storage.run_root={tmp_path / 'runs'}", f"state_dir={tmp_path / 'state'}"])
    ctx = stage_ctx(cfg, tmp_path, "cam")
    n = len(POOL)
    pool = pd.DataFrame({"clip_id": [f"c{i}" for i in range(n + 2)], "error": [None] * n + [None, "unreadable"],
                         "caption_json": [json.dumps({"camera_motion": m}) for m in POOL] + [None, None],
                         "in_D_720p_sft": [True] * (n - 5) + [False] * 5 + [True, True]})
    source = publish(ctx, pool, "D_720p_sft")
    out = sft_camera.run(ctx, CameraBalanceConfig(keep_fraction=0.5, max_repeat=3), source)
    view = mf.read_table(out)
    assert view["in_D_camera"].all() and set(view.clip_id) <= {f"c{i}" for i in range(n - 5)}  # members only
    counts = view.clip_id.value_counts()
    assert (counts == view.drop_duplicates("clip_id").set_index("clip_id").camera_repeat.reindex(counts.index)).all()
    assert out.stats["clips_before"] == n - 5 and out.stats["samples_after"] == len(view)
    assert out.stats["after"]["class"]["static"] < out.stats["before"]["class"]["static"]
    run = ctx.tracker.client.get_run(out.stats["mlflow_run"])
    assert run.data.metrics["class_imbalance_after"] < run.data.metrics["class_imbalance_before"]
    assert "move_share_after.yaw_pos" in run.data.metrics
    with pytest.raises(ValueError, match="no column 'in_D_540p_sft'"):
        sft_camera.run(ctx, CameraBalanceConfig(source="D_540p_sft"), source)
    assert np.issubdtype(view.camera_repeat.dtype, np.integer)
