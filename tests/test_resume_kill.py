"""SIGKILL the CLI while `segment` runs, rerun the same command: only unfinished stages are redone
and the result equals an uninterrupted run (no duplicate or missing clips)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from infra import manifest as mf

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(tmp_path, run_id, *extra):
    return [
        sys.executable, "-m", "flows.cli", "run", "--run-id", run_id, "--input", str(tmp_path / "raw"),
        "--set", f"storage.run_root={tmp_path / 'runs'}", "--set", f"state_dir={tmp_path / 'state'}",
        "--until", "clips", *extra,
    ]


def _env(tmp_path):
    env = dict(os.environ)
    env["PREFECT_HOME"] = str(tmp_path / "state" / "prefect")
    return env


def _kill_tree(proc: subprocess.Popen, marker: str) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Ray daemons of that run (raylet, gcs, workers) may live in their own sessions: kill them too.
    subprocess.run(["pkill", "-9", "-f", marker], check=False)


def test_sigkill_during_segment_then_resume(tmp_path):
    from infra.config import CorpusConfig
    from tasks.corpus import generate_corpus

    generate_corpus(str(tmp_path / "raw"), CorpusConfig(videos=3, width=160, height=90), progress=False)
    env = _env(tmp_path)
    reference = subprocess.run(_cli(tmp_path, "ref"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]

    runs = tmp_path / "runs"
    proc = subprocess.Popen(_cli(tmp_path, "killed"), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not glob.glob(str(runs / "killed" / ".segment.tmp-*")):
        assert proc.poll() is None, "run ended before segment started"
        assert time.time() < deadline, "segment never started"
        time.sleep(0.05)
    time.sleep(1.0)  # let workers write a little into the temporary folder
    _kill_tree(proc, str(runs / ".ray"))
    assert mf.load_success(str(runs / "killed" / "segment")) is None, "segment must not look published"
    ingest_before = mf.load_success(str(runs / "killed" / "ingest"))
    assert ingest_before is not None

    resumed = subprocess.run(_cli(tmp_path, "killed"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "ingest   skipped" in resumed.stderr
    assert mf.load_success(str(runs / "killed" / "ingest")) == ingest_before
    assert not glob.glob(str(runs / "killed" / ".*tmp-*"))

    for stage in ("ingest", "segment"):
        ref, got = (mf.load_success(str(runs / r / stage)) for r in ("ref", "killed"))
        assert ref.fingerprint == got.fingerprint, stage
    ref_clips = mf.read_table(str(runs / "ref" / "clips" / mf.DATA_FILE))
    got_clips = mf.read_table(str(runs / "killed" / "clips" / mf.DATA_FILE))
    assert got_clips.clip_id.is_unique and list(ref_clips.clip_id) == list(got_clips.clip_id)
    on_disk = sorted(p[:-4] for p in os.listdir(runs / "killed" / "clips") if p.endswith(".mp4"))
    assert on_disk == sorted(got_clips.clip_id[got_clips.error.isna()])
