"""Curation for real (Prefect flow, Ray Data stages, MLflow store, mp4 files) on hostile and remote inputs. The whole
flow on a clean corpus, with its MLflow runs and the rerun that skips every stage, is checked inside the whole
report (tests/test_report_e2e.py), which runs the same curation first."""

from __future__ import annotations

import os
import shutil

import pytest

from infra import manifest as mf
from tasks.corpus import generate_video

pytestmark = pytest.mark.slow
SMALL = ("corpus.videos=2", "corpus.width=160", "corpus.height=90", "corpus.shots_per_video=[4,5]")
UNAUDITED = ("audit.mode=off",)


@pytest.fixture(autouse=True)
def fresh_ray():
    """Each test opens its own run; Ray workers must see that test's environment (S3 endpoint)."""
    import ray

    yield
    ray.shutdown()


def _run(cfg, run_id, until=None):
    from flows.pipeline import pipeline

    return pipeline(cfg, run_id, until)


def _published(cfg, run_id, stage):
    m = mf.load_success(os.path.join(cfg.storage.run_root, run_id, stage))
    assert m is not None, f"{stage} not published"
    return m


def _bad_inputs(folder, cfg):
    os.makedirs(folder, exist_ok=True)
    generate_video("good", 3, cfg.corpus, str(folder))
    good = os.path.join(folder, "good.mp4")
    data = open(good, "rb").read()
    open(os.path.join(folder, "truncated.mp4"), "wb").write(data[: len(data) // 3])
    open(os.path.join(folder, "notes.mp4"), "w").write("this is a text file, not a video\n" * 20)
    open(os.path.join(folder, "empty.mp4"), "wb").close()
    import numpy as np

    from infra.video import write_video

    write_video([np.zeros((90, 160, 3), np.uint8)], os.path.join(folder, "oneframe.mp4"), fps=24)


def test_bad_inputs_are_recorded_and_the_run_goes_on(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL, *UNAUDITED, f"input={tmp_path / 'raw'}")
    _bad_inputs(tmp_path / "raw", cfg)
    _run(cfg, "bad", until="clips")
    sources = mf.read_table(_published(cfg, "bad", "ingest"))
    sources.index = sources.source_uri.map(os.path.basename)
    assert sources.loc["good.mp4", "error"] is None
    for name in ("truncated.mp4", "notes.mp4", "empty.mp4"):
        assert isinstance(sources.loc[name, "error"], str), name
    assert sources.loc["oneframe.mp4", "num_frames"] == 1
    clips = mf.read_table(_published(cfg, "bad", "clips"))
    assert (clips[clips.error.isna()].source_uri.map(os.path.basename) == "good.mp4").all()
    assert clips.error.notna().sum() >= 3  # the bad files stay visible downstream, with their reason


def test_s3_input_and_run_root(make_cfg, tmp_path, monkeypatch):
    from s3_server import moto_s3

    cfg = make_cfg(*SMALL)
    local = tmp_path / "raw"
    os.makedirs(local)
    generate_video("film_a", 5, cfg.corpus, str(local))
    with moto_s3(monkeypatch, bucket="reelflow-e2e") as (endpoint, client):
        client.put_object(Bucket="reelflow-e2e", Key="raw/film_a.mp4", Body=(local / "film_a.mp4").read_bytes())
        client.put_object(Bucket="reelflow-e2e", Key="raw/broken.mp4", Body=b"\x00\x00\x00 ftypisom broken")
        cfg = make_cfg(*SMALL, *UNAUDITED, "input=s3://reelflow-e2e/raw", "storage.run_root=s3://reelflow-e2e/runs",
                       f"storage.s3_endpoint_url={endpoint}")
        result = _run(cfg, "s3run", until="clips")
        assert result.uri == "s3://reelflow-e2e/runs/s3run/clips"
        clips = mf.read_table(result)
        good = clips[clips.error.isna()]
        assert len(good) > 0 and all(u.startswith("s3://reelflow-e2e/runs/s3run/clips/") for u in good.clip_uri)
        key = good.clip_uri.iloc[0][len("s3://reelflow-e2e/"):]
        assert client.head_object(Bucket="reelflow-e2e", Key=key)["ContentLength"] > 0
        assert clips.error.notna().any()
        shutil.rmtree(tmp_path / "raw")
