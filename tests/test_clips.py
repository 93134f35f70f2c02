"""tasks.curate.clips: trimming / min / max / splitting rules, frame-accurate re-encode, error rows."""

import os

import av
import numpy as np
import pyarrow as pa
import pytest
from s3_server import moto_s3
from test_video_io import number_of, numbered

from infra import storage
from infra.config import ClipsConfig
from infra.video import iter_frames, probe_video, write_video
from tasks.curate.clips import CLIPS_SCHEMA, clip_id, cut_clips, plan_ranges

W, H, FPS = 64, 36, 24
CFG = ClipsConfig(min_seconds=1.0, max_seconds=3.0, trim_frames=2, crf=0)
BUCKET = "reelflow-clips-test"  # its own bucket: moto keeps one in-process store across servers


def shot(start, end, kind_in="cut", kind_out="cut", index=0, error=None, source_id="src"):
    return {
        "shot_id": f"{source_id}-{index}",
        "source_id": source_id,
        "source_uri": "unused",
        "shot_index": index,
        "start_frame": start,
        "end_frame": end,
        "fps": float(FPS),
        "width": W,
        "height": H,
        "boundary_in_kind": kind_in,
        "boundary_out_kind": kind_out,
        "error": error,
    }


def source_row(path, n, width=W, height=H, error=None):
    return {
        "source_id": "src",
        "source_uri": path,
        "fps": float(FPS),
        "width": width,
        "height": height,
        "num_frames": n,
        "error": error,
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("src") / "film.mp4")
    write_video((numbered(i) for i in range(200)), path, FPS, crf=0)
    return source_row(path, 200)


def test_trim_only_at_cuts():
    assert plan_ranges(shot(0, 60, "start", "cut"), CFG) == ([(0, 58)], None)
    assert plan_ranges(shot(60, 120, "cut", "gradual"), CFG) == ([(62, 120)], None)
    assert plan_ranges(shot(120, 180, "gradual", "end"), CFG) == ([(120, 180)], None)


def test_min_seconds_is_inclusive_and_reports_why():
    assert plan_ranges(shot(0, 28), CFG) == ([(2, 26)], None)  # 24 frames = exactly 1.0 s
    ranges, why = plan_ranges(shot(0, 27), CFG)
    assert ranges == [] and why.startswith("too short: 23 frames")


@pytest.mark.parametrize("length", [73, 100, 144, 145, 500])
def test_long_shots_split_into_near_equal_parts_within_bounds(length):
    ranges, _ = plan_ranges(shot(0, length, "start", "end"), CFG)
    sizes = [b - a for a, b in ranges]
    assert ranges[0][0] == 0 and ranges[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(24 <= s <= 72 for s in sizes) and max(sizes) - min(sizes) <= 1


def test_split_keeps_min_when_halves_would_be_too_short():
    cfg = ClipsConfig(min_seconds=1.0, max_seconds=1.5, trim_frames=0)  # 24..36 frames
    assert plan_ranges(shot(0, 40), cfg) == ([(0, 36)], None)  # halves of 20 < 24: one clip, tail dropped


def test_cut_clips_is_frame_accurate(tmp_path, source):
    shots = [shot(0, 60, "start", "cut", 0), shot(60, 70, "cut", "cut", 1), shot(70, 200, "cut", "end", 2)]
    rows = cut_clips(source, shots, CFG, str(tmp_path / "tmp"), "s3://bucket/run/clips")
    assert pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA).column_names == [
        "clip_id",
        "source_id",
        "source_uri",
        "media",
        "shot_id",
        "start_frame",
        "end_frame",
        "fps",
        "width",
        "height",
        "num_frames",
        "clip_uri",
        "error",
    ]
    assert [(r["start_frame"], r["end_frame"], r["shot_id"]) for r in rows] == [
        (0, 58, "src-0"),
        (60, 70, "src-1"),
        (72, 136, "src-2"),
        (136, 200, "src-2"),
    ]
    short = rows[1]
    assert short["error"].startswith("too short") and short["clip_uri"] is None
    clips = [r for r in rows if r["error"] is None]
    assert sorted(os.listdir(tmp_path / "tmp")) == sorted(f"{r['clip_id']}.mp4" for r in clips)
    for r in clips:
        assert r["clip_id"] == clip_id("src", r["start_frame"], r["end_frame"])
        assert r["clip_uri"] == f"s3://bucket/run/clips/{r['clip_id']}.mp4"
        path = str(tmp_path / "tmp" / f"{r['clip_id']}.mp4")
        p = probe_video(path)
        assert (p.num_frames, p.fps, p.width, p.height) == (r["num_frames"], FPS, W, H)
        assert [number_of(f) for _, f in iter_frames(path)] == list(range(r["start_frame"], r["end_frame"]))


def test_bad_shots_and_sources_become_error_rows(tmp_path, source):
    long_shot = shot(60, 300, "cut", "end", 1)  # the source has only 200 frames
    rows = cut_clips(source, [shot(0, 50, error="segment: unreadable"), long_shot], CFG, str(tmp_path), "x")
    assert rows[0]["error"] == "segment: unreadable" and rows[0]["clip_uri"] is None
    ranges, _ = plan_ranges(long_shot, CFG)
    assert [(r["start_frame"], r["end_frame"]) for r in rows[1:]] == ranges
    for r in rows[1:]:
        fits = r["end_frame"] <= 200
        assert (r["error"] is None, r["clip_uri"] is not None) == (fits, fits)
        assert fits or "ended before frame" in r["error"]
    assert sorted(os.listdir(tmp_path)) == sorted(f"{r['clip_id']}.mp4" for r in rows if r["clip_uri"])
    assert 0 < len(os.listdir(tmp_path)) < len(ranges)

    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    rows = cut_clips(
        source_row(str(text), 200), [shot(0, 60), shot(60, 120, index=1)], CFG, str(tmp_path / "o"), "x"
    )
    assert len(rows) == 2 and all("decoding or encoding failed" in r["error"] for r in rows)
    assert not os.path.exists(tmp_path / "o") or os.listdir(tmp_path / "o") == []


def test_one_frame_video_yields_a_too_short_row(tmp_path):
    path = str(tmp_path / "one.mp4")
    write_video([numbered(0)], path, FPS)
    rows = cut_clips(source_row(path, 1), [shot(0, 1, "start", "end")], CFG, str(tmp_path / "o"), "x")
    assert len(rows) == 1 and rows[0]["error"].startswith("too short: 1 frames")
    assert not os.path.exists(tmp_path / "o")


def test_odd_sized_source_is_cropped_to_even(tmp_path):
    path = str(tmp_path / "odd.mkv")
    with av.open(path, "w") as container:  # ffv1 allows odd sizes, unlike our yuv420p H.264
        stream = container.add_stream("ffv1", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W + 1, H + 1, "yuv444p"
        for i in range(40):
            frame = np.pad(numbered(i), ((0, 1), (0, 1), (0, 0)), mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    rows = cut_clips(
        source_row(path, 40, W + 1, H + 1), [shot(0, 40, "start", "end")], CFG, str(tmp_path), "x"
    )
    assert (rows[0]["error"], rows[0]["width"], rows[0]["height"]) == (None, W, H)
    clip = str(tmp_path / f"{rows[0]['clip_id']}.mp4")
    assert [number_of(f) for _, f in iter_frames(clip)] == list(range(40))


def test_remote_source_and_write_dir(monkeypatch, tmp_path, source):
    with moto_s3(monkeypatch, BUCKET) as (endpoint, client):
        storage.configure_storage(endpoint)
        try:
            storage.upload(source["source_uri"], f"s3://{BUCKET}/raw/film.mp4")
            remote = {**source, "source_uri": f"s3://{BUCKET}/raw/film.mp4"}
            rows = cut_clips(remote, [shot(10, 60)], CFG, f"s3://{BUCKET}/run/.clips.tmp", "s3://f")
            assert rows[0]["error"] is None and rows[0]["start_frame"] == 12
            local = str(tmp_path / "clip.mp4")
            client.download_file(BUCKET, f"run/.clips.tmp/{rows[0]['clip_id']}.mp4", local)
            assert [number_of(f) for _, f in iter_frames(local)] == list(range(12, 58))
        finally:
            storage.configure_storage(None)
            monkeypatch.delenv("REELFLOW_S3_ENDPOINT_URL", raising=False)
