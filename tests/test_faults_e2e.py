"""Faults end to end through ``reelflow run`` (slow): a hostile input folder, two runs with one id
at once (the holder is a second uninterrupted run: byte-identical clips), a full disk during
``clips``. Every run ends with the published-files check, and a run recovered from a fault must
equal the uninterrupted one (same stage fingerprints and clip bytes: not a row lost)."""

import errno
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from bad_inputs import build, encode
from published import verify_published

from infra import manifest as mf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("ingest", "segment", "clips")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # several full runs each; minutes on a loaded machine


def _cmd(base, input_dir: str, run_id: str, root: str | None = None) -> list[str]:
    root = root or str(base / "runs")
    return [sys.executable, "-m", "flows.cli", "run", "--input", input_dir, "--until", "clips", "--audit", "off",
            "--run-id", run_id, "--set", f"storage.run_root={root}", "--set", f"state_dir={base / 'state'}"]


def _env() -> dict:
    return {**os.environ, "REELFLOW_RETRY_BASE_DELAY": "0.05"}


def _run(base, input_dir: str, run_id: str, root: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(base, input_dir, run_id, root), cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=900)


def _fingerprints(run_dir: str) -> dict[str, str]:
    return {s: mf.load_success(os.path.join(run_dir, s)).fingerprint for s in STAGES}


def _clip_bytes(run_dir: str) -> dict[str, bytes]:
    folder = os.path.join(run_dir, "clips")
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder)) if f.endswith(".mp4")}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def small_input(base):
    folder = base / "input"
    folder.mkdir()
    for i, (w, h) in enumerate([(64, 36), (48, 64), (80, 44)]):
        encode(str(folder / f"film_{i}.mp4"), n=96 + 12 * i, w=w, h=h)
    return str(folder)


@pytest.fixture(scope="module")
def reference(base, small_input):
    done = _run(base, small_input, "ref")
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = str(base / "runs" / "ref")
    verify_published(run_dir)
    assert len(_clip_bytes(run_dir)) >= 3
    return run_dir


def test_a_second_run_with_the_same_id_refuses_and_nothing_is_lost(base, small_input, reference):
    """The refused run touches nothing, so the holder is a second uninterrupted run: its clip files
    must equal the reference's byte for byte (x264 set up for it: infra/video.py)."""
    first = subprocess.Popen(_cmd(base, small_input, "twin"), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = base / "runs" / "twin" / ".reelflow-run.lock"
    deadline = time.time() + 300
    while not (lock.exists() and lock.stat().st_size) and time.time() < deadline:
        time.sleep(0.2)
    second = _run(base, small_input, "twin")
    first_still_running = first.poll() is None  # refused while the holder works, not queued behind it
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode != 0 and "already running" in second.stderr, second.stderr[-2000:]
    assert f"pid {first.pid}" in second.stderr and first_still_running
    assert "stage" not in second.stderr.split("already running")[0], "refused before any stage ran"
    twin = str(base / "runs" / "twin")
    verify_published(twin)
    assert _fingerprints(twin) == _fingerprints(reference)
    assert _clip_bytes(twin) == _clip_bytes(reference)


def _mount(path, size: str) -> bool:
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_disk_during_clips_fails_unpublished_and_the_rerun_loses_nothing(base, small_input, reference):
    run_dir = base / "runs" / "full"
    if not _mount(run_dir, "8m"):
        pytest.skip("mounting a tmpfs needs CAP_SYS_ADMIN; tests/test_faults_errors.py injects ENOSPC instead")
    try:
        for stage in ("ingest", "segment"):  # published upstream, as a run interrupted before clips leaves it
            shutil.copytree(os.path.join(reference, stage), run_dir / stage)
        filler = run_dir / ".filler"
        with open(filler, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        os.truncate(filler, os.path.getsize(filler) - 8 * 1024)  # room for the lock file, not for clips
        failed = _run(base, small_input, "full")
        assert failed.returncode != 0 and "No space left on device" in failed.stderr, failed.stderr[-3000:]
        assert "still failing after" in failed.stderr
        assert mf.load_success(str(run_dir / "clips")) is None, "never a _SUCCESS.json after a full disk"
        os.unlink(filler)
        done = _run(base, small_input, "full")
        assert done.returncode == 0, done.stderr[-3000:]
        verify_published(str(run_dir))
        assert _fingerprints(str(run_dir)) == _fingerprints(reference)
        assert _clip_bytes(str(run_dir)) == _clip_bytes(reference)
    finally:
        subprocess.run(["umount", "-l", str(run_dir)], check=False)


def test_hostile_input_folder_end_to_end(base):
    corpus = str(base / "hostile")
    expected = build(corpus)
    done = _run(base, corpus, "hostile")
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = str(base / "runs" / "hostile")
    stages = verify_published(run_dir)
    ingest = mf.read_table(os.path.join(run_dir, "ingest", mf.DATA_FILE))
    skipped = json.loads(open(os.path.join(run_dir, "ingest", "skipped.json")).read())
    assert len(ingest) + len(skipped) == len(expected), "every entry accounted for"
    assert set(ingest["source_uri"]) | {s["uri"] for s in skipped} == set(expected)
    clips = mf.read_table(os.path.join(run_dir, "clips", mf.DATA_FILE))
    good = clips[clips["error"].isna()]
    missing = [u for u, e in expected.items() if e.clips and u not in set(good["source_uri"])]
    assert not missing, f"good inputs without a clip: {missing}"
    assert stages["clips"] == len(clips)
