"""MLflow tracking on a real sqlite store: the experiment kind, stage run names, superseded attempts, model
versions a person can read, a store that moves with its run root, viewable sample videos, the run summary."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from infra import manifest as mf
from infra.run_summary import charts, funnel, markdown, metrics, summarise
from infra.tracking import Tracker, default_tracking_uri, display_name
from infra.video import iter_frames, write_video
from infra.viewable import upscale_factor, viewable


def _tracker(root) -> Tracker:
    uri, artifacts = default_tracking_uri(str(root), str(root))
    return Tracker(uri, "reelflow-test", artifact_root=artifacts)


def _video(path, frames=12, height=32, width=64):
    rng = np.random.default_rng(0)
    write_video([rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(frames)], str(path), fps=24)
    return str(path)


def test_experiment_is_a_model_training_experiment(tmp_path):
    tracker = _tracker(tmp_path / "runs")
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # an experiment made before the tag existed (MLflow 3 shows it in GenAI mode) gets it when reopened
    tracker.client.delete_experiment_tag(tracker.experiment_id, "mlflow.experimentKind")
    again = _tracker(tmp_path / "runs")
    assert again.client.get_experiment(again.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_stage_runs_are_named_for_people_and_failed_attempts_superseded(tmp_path):
    tracker = _tracker(tmp_path / "runs")
    parent = tracker.start_parent("r1", {}, {})
    with pytest.raises(RuntimeError), tracker.child(parent, "audit_D_540p", {}):
        raise RuntimeError("3/20 bad")
    with tracker.child(parent, "audit_D_540p", {}) as good:
        pass
    orphan = tracker.client.create_run(tracker.experiment_id, tags={  # an attempt whose process was killed
        "mlflow.parentRunId": parent, "reelflow.stage": "dpo-1"}).info.run_id
    with tracker.child(parent, "dpo-1", {}):
        pass
    assert tracker.client.get_run(orphan).info.status == "KILLED"
    assert "interrupted" in tracker.client.get_run(orphan).data.tags["mlflow.note.content"]
    runs = tracker.client.search_runs([tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"gate D_540p", "gate D_540p (superseded)", "dpo-1", "dpo-1 (superseded)"}
    old = by_name["gate D_540p (superseded)"]
    assert old.info.status == "FAILED" and old.data.tags["reelflow.superseded_by"] == good
    assert "3/20 bad" in old.data.tags["mlflow.note.content"] and "Superseded" in old.data.tags["mlflow.note.content"]
    assert "reelflow.superseded_by" not in by_name["gate D_540p"].data.tags
    assert display_name("audit_D_256p_simulated") == "gate D_256p (simulated)"


def test_model_versions_carry_description_metrics_dataset_and_newest(tmp_path):
    tracker = _tracker(tmp_path / "runs")
    parent = tracker.start_parent("r1", {}, {})
    ckpt = tmp_path / "runs" / "r1" / "sft-540p" / "checkpoint"
    ckpt.mkdir(parents=True)
    import pandas as pd

    with tracker.child(parent, "sft-540p", {"reelflow.run_id": "r1"}) as rid:
        tracker.log_metrics(rid, {"final_loss": 0.25, "steps": 4})
        tracker.log_input(rid, pd.DataFrame({"a": [1]}), str(tmp_path), "latents-D_540p_sft-540p", "fp0123")
    version = tracker.ensure_registered("m", str(ckpt), rid, "sft-540p", {"reelflow.run_id": "r1"})
    mv = tracker.client.get_model_version("m", version)
    assert "final_loss=0.25" in mv.description and "fp0123" in mv.description and rid in mv.description
    assert mv.tags["metric.final_loss"] == "0.25" and mv.tags["dataset.latents-D_540p_sft-540p"] == "fp0123"
    assert mv.tags["mlflow_run_id"] == rid
    aliases = tracker.client.get_registered_model("m").aliases
    assert aliases == {"sft-540p": version, "newest": version}  # "latest" is reserved by MLflow
    with tracker.child(parent, "dpo-1", {}) as rid2:
        pass
    later = tracker.ensure_registered("m", str(ckpt.parent.parent / "dpo-1"), rid2, "dpo-1", {})
    assert tracker.client.get_registered_model("m").aliases["newest"] == later != version
    assert tracker.client.get_model_version_by_alias("m", "newest").version == later


def test_a_moved_store_reads_and_writes_where_it_is_now(tmp_path):
    old = tmp_path / "a" / "runs"
    tracker = _tracker(old)
    parent = tracker.start_parent("r1", {}, {})
    note = tmp_path / "note.txt"
    note.write_text("hello")
    tracker.log_artifact(parent, str(note), "docs")
    ckpt = old / "r1" / "ckpt"
    ckpt.mkdir(parents=True)
    tracker.ensure_registered("m", str(ckpt), parent, "sft-540p", {})
    new = tmp_path / "b" / "mounted" / "runs"
    new.parent.mkdir(parents=True)
    shutil.move(str(old), str(new))  # the old folder is gone: nothing may point there any more

    moved = _tracker(new)
    exp = moved.client.get_experiment(moved.experiment_id)
    assert exp.artifact_location.startswith(f"file://{new}/")
    run = moved.client.get_run(moved.find_parent("r1"))
    assert str(new) in run.info.artifact_uri and str(old) not in run.info.artifact_uri
    got = moved.client.download_artifacts(run.info.run_id, "docs/note.txt", str(tmp_path / "dl"))
    assert open(got).read() == "hello"
    assert moved.client.get_model_version_by_alias("m", "sft-540p").source == str(new / "r1" / "ckpt")
    moved.log_artifact(run.info.run_id, str(note), "again")  # a resumed run writes into the new folder
    assert (new / "mlartifacts").exists() and not old.exists()


def test_sample_videos_become_watchable(tmp_path):
    assert upscale_factor(64, 32) == 8 and upscale_factor(640, 360) == 1 and upscale_factor(63, 33) % 2 == 0
    view, strip = viewable(_video(tmp_path / "prompt0.mp4"), str(tmp_path / "out"))
    frames = [f for _, f in iter_frames(view)]
    assert len(frames) == 12 and frames[0].shape == (256, 512, 3)
    with Image.open(strip) as im:
        assert im.size == (8 * 192 + 7 * 4, 96)  # 8 frames, each upscaled 3x to >= 160 px, 4 px apart


def test_logged_mp4s_get_a_viewable_copy_and_strip(tmp_path):
    tracker = _tracker(tmp_path / "runs")
    parent = tracker.start_parent("r1", {}, {})
    tracker.log_artifact(parent, _video(tmp_path / "prompt0.mp4"), "samples/step-4")
    names = {a.path for a in tracker.client.list_artifacts(parent, "samples/step-4")}
    assert names == {"samples/step-4/prompt0.mp4", "samples/step-4/prompt0_view.mp4", "samples/step-4/prompt0_strip.png"}


def _manifest(stage, rows, errors=0, start=0.0, seconds=1.0, **stats):
    return mf.Manifest(stage=stage, uri=stage, fingerprint="f", row_count=rows, error_count=errors, config_hash="c",
                       resume_key="k", created_at=1000 + start + seconds, seconds=seconds, stats=stats)


def test_summary_funnel_timeline_losses_and_charts(tmp_path):
    stages = {"ingest": _manifest("ingest", 3, 1, 0, 2, readable=2), "segment": _manifest("segment", 9, 0, 2, 3, shots=9),
              "clips": _manifest("clips", 14, 2, 5, 4, clips=12), "D_256p": _manifest("D_256p", 14, 2, 9, 1, kept=10),
              "D_360p": _manifest("D_360p", 14, 2, 10, 1, kept=8),  # a view: the whole pool, kept in stats
              "D_post": _manifest("D_post", 14, 2, 10, 1, clips_before=8, samples_after=6),
              "pretrain-256p": _manifest("pretrain-256p", 4, 0, 11, 20, final_loss=0.5)}
    assert funnel(stages) == {"videos": 2, "shots": 9, "clips": 12, "D_256p": 10, "D_360p": 8, "D_post": 6}
    summary = summarise(stages, {"D_256p": 0.05})
    assert summary["timeline"]["clips"] == (5.0, 4.0) and summary["seconds"] == 31.0
    assert summary["final_loss"] == {"pretrain-256p": 0.5}
    m = metrics(summary)
    assert m["funnel.D_360p"] == 8 and m["seconds.segment"] == 3 and m["final_loss.pretrain-256p"] == 0.5
    text = markdown("r1", "tiny", False, "AuditFailed: 3/20 bad", summary, {"pipeline": "http://x/#/runs/1"})
    assert "FAILED**: AuditFailed: 3/20 bad" in text and "videos 2 → shots 9 → clips 12 → D_256p 10 → D_360p 8" in text
    assert "| pretrain-256p | 20.0 |" in text and "D_256p 5.0%" in text and "[pipeline](http://x/#/runs/1)" in text
    paths = charts(summary, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["funnel.png", "timeline.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.size[0] > 500 and np.asarray(im.convert("L")).std() > 10  # drawn, not blank
