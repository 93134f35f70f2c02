"""Transient faults are not bad inputs: classified, retried, and when they persist they fail the
stage instead of becoming permanent error rows; after the fault is fixed the same call loses nothing.

Faults are real where the machine allows: a full tmpfs (ENOSPC from the kernel), a moto S3 server
behind a proxy that answers 503/500. Where mounting is not allowed the ENOSPC test injects the
same OSError at the clip writer's publish step.
"""

import errno
import os
import subprocess

import av
import numpy as np
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from s3_faults import faulty_s3
from s3_server import moto_s3
from test_clips import CFG, shot, source_row
from test_video_io import numbered

from infra import errors, storage
from infra.config import IngestConfig
from infra.errors import TransientError, is_transient, retry
from infra.video import write_video
from tasks.curate import clips
from tasks.curate.clips import cut_clips
from tasks.curate.ingest import probe_source

BUCKET = "reelflow-faults-test"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(errors, "BASE_DELAY", 0.01)


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("film") / "film.mp4")
    write_video((numbered(i) for i in range(120)), path, 24, crf=0)
    return source_row(path, 120)


SHOTS = [shot(0, 40, "start", "cut", 0), shot(40, 80, "cut", "cut", 1), shot(80, 120, "cut", "end", 2)]


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize("exc, transient", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EIO, "Input/output error"), True),
    (PermissionError(errno.EACCES, "Permission denied"), True),
    (OSError(errno.EROFS, "Read-only file system"), True),
    (ConnectionResetError(errno.ECONNRESET, "reset"), True),
    (TimeoutError("timed out"), True),
    (EndpointConnectionError(endpoint_url="http://s3"), True),
    (_client_error(503, "SlowDown"), True),
    (_client_error(500, "InternalError"), True),
    (_client_error(404, "NoSuchKey"), False),
    (FileNotFoundError(errno.ENOENT, "gone"), False),
    (ValueError("bad frame size"), False),
    (av.error.InvalidDataError(errno.EINVAL, "Invalid data found when processing input"), False),
])
def test_classification(exc, transient):
    assert is_transient(exc) is transient
    wrapped = RuntimeError("while writing")
    wrapped.__cause__ = exc
    assert is_transient(wrapped) is transient  # found through the cause chain


def test_retry_recovers_a_blip_and_fails_loudly_when_it_persists():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return "done"

    assert retry(flaky, "writing x") == "done" and len(calls) == 3
    with pytest.raises(TransientError, match=r"writing y: OSError.*No space left.*4 attempts.*rerun the same command"):
        retry(lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")), "writing y")
    bad_input = []
    with pytest.raises(ValueError):  # not retried: a bad input fails at once
        retry(lambda: bad_input.append(1) or (_ for _ in ()).throw(ValueError("corrupt")), "z")
    assert len(bad_input) == 1


def _clip_files(folder) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.endswith(".mp4"))


def test_enospc_at_clip_publish_fails_then_rerun_loses_nothing(monkeypatch, tmp_path, film):
    real_replace = os.replace
    state = {"full": True, "hits": 0}

    def replace(src, dst):  # the kernel's answer on a full disk, at the clip's final rename
        if state["full"] and str(dst).endswith(".mp4"):
            state["hits"] += 1
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "clips"
    with pytest.raises(TransientError, match="No space left on device"):
        cut_clips(film, SHOTS, CFG, str(out), "final")
    assert state["hits"] == 4 and _clip_files(out) == []  # retried, nothing half-written, no rows
    state["full"] = False
    rows = cut_clips(film, SHOTS, CFG, str(out), "final")
    assert [r["error"] for r in rows] == [None] * len(rows) and len(rows) >= 3
    assert _clip_files(out) == sorted(f"{r['clip_id']}.mp4" for r in rows)


def _mount_tmpfs(path, size: str) -> bool:
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def _fill(folder) -> str:
    """Fill the file system holding ``folder`` to the last byte; returns the filler's path."""
    filler = os.path.join(folder, "filler")
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_real_full_disk_tmpfs(tmp_path, film):
    """The kernel's own ENOSPC: a full 1 MiB tmpfs; freed, the same call writes every clip."""
    mount = tmp_path / "disk"
    if not _mount_tmpfs(mount, "1m"):
        pytest.skip("mounting a tmpfs needs CAP_SYS_ADMIN (root in CI); the injected ENOSPC test covers the logic")
    try:
        os.makedirs(mount / "clips")
        filler = _fill(str(mount))
        with pytest.raises(TransientError, match="No space left on device"):
            cut_clips(film, SHOTS, CFG, str(mount / "clips"), "final")
        assert os.listdir(mount / "clips") == []  # no clip, no .part left behind
        os.unlink(filler)
        rows = cut_clips(film, SHOTS, CFG, str(mount / "clips"), "final")
        assert all(r["error"] is None for r in rows)
        assert _clip_files(mount / "clips") == sorted(f"{r['clip_id']}.mp4" for r in rows)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def s3_proxy(monkeypatch):
    with moto_s3(monkeypatch, BUCKET) as (endpoint, client), faulty_s3(endpoint) as (proxy, state):
        # botocore's own retries would hide a short fault; one try each keeps the test about ours.
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        monkeypatch.setenv("AWS_RETRY_MODE", "standard")
        storage.configure_storage(proxy)
        try:
            yield client, state
        finally:
            storage.configure_storage(None)
            monkeypatch.delenv("REELFLOW_S3_ENDPOINT_URL", raising=False)


def test_s3_5xx_on_clip_upload_fails_the_source_then_rerun_writes_every_clip(s3_proxy, film):
    client, state = s3_proxy
    state.fail = lambda method, path: 503 if method in ("PUT", "POST") and "/run/" in path else None
    write_dir = f"s3://{BUCKET}/run/.clips.tmp-x"
    with pytest.raises(TransientError, match="clips: writing the clips of"):
        cut_clips(film, SHOTS, CFG, write_dir, "final")
    assert state.injected >= 4
    state.fail = lambda method, path: None
    rows = cut_clips(film, SHOTS, CFG, write_dir, "final")
    assert all(r["error"] is None for r in rows)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="run/")["Contents"])
    assert keys == sorted(f"run/.clips.tmp-x/{r['clip_id']}.mp4" for r in rows)


def test_s3_5xx_while_reading_a_source_is_not_an_error_row(s3_proxy, film):
    client, state = s3_proxy
    client.upload_file(film["source_uri"], BUCKET, "raw/film.mp4")
    uri = f"s3://{BUCKET}/raw/film.mp4"
    state.fail = lambda method, path: 500 if method == "GET" and "raw/film.mp4" in path else None
    with pytest.raises(TransientError, match="ingest: reading"):
        probe_source(uri, IngestConfig())
    state.fail = lambda method, path: None
    row = probe_source(uri, IngestConfig())
    assert row["error"] is None and row["num_frames"] == 120


def test_a_corrupt_source_is_still_a_row_not_a_retry(tmp_path, monkeypatch):
    calls = []
    real = clips._encode_source
    monkeypatch.setattr(clips, "_encode_source", lambda *a: calls.append(1) or real(*a))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    rows = cut_clips(source_row(str(bad), 120), SHOTS, CFG, str(tmp_path / "out"), "final")
    assert len(calls) == 1 and all("decoding or encoding failed" in r["error"] for r in rows)


def _fail_gets_of(state, key: str) -> None:
    state.fail = lambda method, path: 503 if method == "GET" and key in path else None


def test_s3_5xx_in_segment_score_and_caption_fails_the_stage_not_the_rows(s3_proxy, film, tmp_path, monkeypatch):
    """Every stage that reads media: a persistent S3 fault raises TransientError (the stage fails
    unpublished), and once the store answers the same call gives good rows; nothing became an error row."""
    monkeypatch.setattr(errors, "ATTEMPTS", 2)  # s3fs retries each read itself (~2 s); two of ours suffice
    from infra.config import SegmentConfig
    from infra.config_caption import CaptionConfig
    from infra.config_filters import ScoreConfig
    from infra.tables import CLIPS_SCHEMA
    from tasks.curate.caption import CaptionWorker, resolve_models
    from tasks.curate.filters import BasicFilter, build_filters
    from tasks.curate.score import score_clip
    from tasks.curate.segment import segment_video

    client, state = s3_proxy
    client.upload_file(film["source_uri"], BUCKET, "raw/film.mp4")
    source = {**film, "source_uri": f"s3://{BUCKET}/raw/film.mp4"}
    seg = SegmentConfig(use_transnet=False)
    _fail_gets_of(state, "raw/film.mp4")
    with pytest.raises(TransientError, match="segment: reading"):
        segment_video(source, seg)
    state.fail = lambda method, path: None
    shots = segment_video(source, seg)
    assert shots and all(r["error"] is None for r in shots)

    rows = cut_clips(film, SHOTS, CFG, str(tmp_path / "clips"), str(tmp_path / "clips"))
    clip = rows[0]
    client.upload_file(clip["clip_uri"], BUCKET, "run/clips/c.mp4")
    clip = {**clip, "clip_uri": f"s3://{BUCKET}/run/clips/c.mp4"}
    score_cfg = ScoreConfig(text={"enabled": False}, logo={"enabled": False}, aesthetic={"enabled": False},
                            dedup={"enabled": False}, quality={"enabled": False})
    filters = build_filters(score_cfg)
    _fail_gets_of(state, "run/clips/c.mp4")
    with pytest.raises(TransientError, match="score: reading"):
        score_clip(clip, filters, score_cfg, BasicFilter(), None)
    cap_cfg = CaptionConfig(cache_dir=str(tmp_path / "models"), captioner={"string_cap": 16})
    worker = CaptionWorker(cap_cfg.model_dump(), *resolve_models(cap_cfg))
    with pytest.raises(TransientError, match="caption: reading"):
        worker({"rows": [clip], "names": CLIPS_SCHEMA.names})
    state.fail = lambda method, path: None
    scored = score_clip(clip, filters, score_cfg, BasicFilter(), None)
    assert scored["error"] is None and scored["score_black_ratio"] is not None
    captioned = worker({"rows": [clip], "names": CLIPS_SCHEMA.names})[0]["row"]
    assert captioned["error"] is None and captioned["caption_json"]
