"""infra.video: exact probing, frame-accurate decoding (with seeks), atomic H.264 writing."""

import os
import pickle
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from infra.contact_sheet import contact_sheet
from infra.video import VideoError, VideoWriter, iter_frames, probe_video, write_video

W, H, FPS, N = 64, 36, 24, 120


def numbered(i: int) -> np.ndarray:
    """Frame ``i`` as 8 vertical bars, bar b white iff bit b of i is set: survives lossy coding."""
    row = np.repeat(((i >> np.arange(8)) & 1).astype(np.uint8) * 255, W // 8)
    return np.broadcast_to(row[None, :, None], (H, W, 3)).copy()


def number_of(frame: np.ndarray) -> int:
    bars = frame[..., 0].reshape(frame.shape[0], 8, -1).mean(axis=(0, 2))
    return int(((bars > 127) << np.arange(8)).sum())


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("video") / "numbered.mp4")
    assert write_video((numbered(i) for i in range(N)), path, FPS, crf=0) == N
    return path


def test_probe_reports_exact_stream_facts(video):
    p = probe_video(video)
    assert "mp4" in p.container.split(",") and p.codec == "h264" and p.pix_fmt == "yuv420p"
    assert (p.width, p.height, p.fps, p.num_frames) == (W, H, 24.0, N)
    assert p.duration_s == pytest.approx(N / FPS) and p.bit_rate > 0


def test_ntsc_rate_and_single_frame_round_trip(tmp_path):
    path = str(tmp_path / "ntsc.mp4")
    write_video((numbered(i) for i in range(7)), path, 30000 / 1001)
    assert probe_video(path).fps == float(Fraction(30000, 1001))
    assert probe_video(path).num_frames == 7
    one = str(tmp_path / "one.mp4")
    write_video([numbered(5)], one, FPS)
    assert probe_video(one).num_frames == 1
    assert [(i, number_of(f)) for i, f in iter_frames(one)] == [(0, 5)]


def test_full_decode_is_in_order_and_exact(video):
    assert [(i, number_of(f)) for i, f in iter_frames(video)] == [(i, i) for i in range(N)]


def test_seeking_decode_is_frame_accurate(video):
    with av.open(video) as container:
        keys = sorted(p.pts for p in container.demux(container.streams.video[0]) if p.is_keyframe)
    assert len(keys) > 1, "fixture must contain keyframes past frame 0 to exercise the seek"
    for start in (1, 31, 32, 33, 64, 90, N - 1):
        got = [(i, number_of(f)) for i, f in iter_frames(video, start, start + 4)]
        want = [(i, i) for i in range(start, min(start + 4, N))]
        assert got == want, start
    assert [i for i, _ in iter_frames(video, N - 2, N + 50)] == [N - 2, N - 1]


def test_decoded_frames_re_encode_without_rgb(tmp_path, video):
    out = str(tmp_path / "copy.mp4")
    assert write_video((f for _, f in iter_frames(video, 10, 20, fmt=None)), out, FPS, crf=0) == 10
    assert [number_of(f) for _, f in iter_frames(out)] == list(range(10, 20))


def test_crashed_writer_leaves_no_file(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), VideoWriter(str(target), FPS, W, H) as writer:
        writer.write(numbered(0))
        raise RuntimeError("killed mid-write")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="no frames"), VideoWriter(str(target), FPS, W, H):
        pass
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="even"):
        VideoWriter(str(target), FPS, 65, H)


def _bad_files(tmp_path, video) -> dict:
    data = open(video, "rb").read()
    files = {
        "empty": b"",
        "text": b"this is a shopping list, not a film\n" * 20,
        "truncated_tail": data[: len(data) // 2],
        "truncated_head": data[:200],
    }
    for name, content in files.items():
        (tmp_path / f"{name}.mp4").write_bytes(content)
    return {name: str(tmp_path / f"{name}.mp4") for name in files}


@pytest.mark.parametrize(
    "name, reason",
    [
        ("empty", "empty file"),
        ("text", "not a video file"),
        ("truncated_tail", "corrupt or truncated"),
        ("truncated_head", "no video stream"),
    ],
)
def test_bad_inputs_raise_video_error_naming_the_file(tmp_path, video, name, reason):
    path = _bad_files(tmp_path, video)[name]
    with pytest.raises(VideoError, match=reason) as err:
        probe_video(path)
    assert path in str(err.value)


def test_absurd_size_is_refused_before_decoding(video):
    with pytest.raises(VideoError, match="absurd frame size 64x36"):
        probe_video(video, max_size=(32, 32))


def test_video_error_pickles_for_ray_workers():
    err = pickle.loads(pickle.dumps(VideoError("s3://b/x.mp4", "empty file")))
    assert (err.uri, err.reason, str(err)) == ("s3://b/x.mp4", "empty file", "s3://b/x.mp4: empty file")


def test_contact_sheet_grid_shows_requested_frames(tmp_path, video):
    (tmp_path / "bad.mp4").write_text("not a video")
    items = [(video, None, "middle"), (video, 3, "frame 3"), (str(tmp_path / "bad.mp4"), 0, "broken")]
    out = contact_sheet(items, str(tmp_path / "sheets" / "sheet.png"), thumb_width=64, columns=2)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    tile = H + 14  # thumbnail plus label strip
    assert sheet.shape == (2 * tile, 2 * W, 3)
    assert number_of(sheet[:H, :W]) == N // 2 and number_of(sheet[:H, W:]) == 3
    assert sheet[tile : tile + H, :W].max() < 40, "an unreadable video is a dark tile, not a crash"


def test_the_same_frames_encode_to_the_same_bytes_every_time(tmp_path):
    """Resume-equals-uninterrupted compares clip files byte for byte. x264's mbtree lookahead (with
    B-frames) once made this exact loop give 4 different files in 30 encodes; decoding between the
    encodes, as the clips stage does, stirs the memory it read."""
    from bad_inputs import encode

    src = str(tmp_path / "src.mp4")
    encode(src, n=120, w=80, h=44)
    frames, digests = None, set()
    for k in range(30):
        decoded = [f.to_ndarray(format="yuv420p") for _, f in iter_frames(src, 10, 100, fmt=None, threads=False)]
        frames = frames or decoded
        out = str(tmp_path / f"clip{k}.mp4")
        with VideoWriter(out, 24, 80, 44) as writer:
            for x in frames:
                writer.write(av.VideoFrame.from_ndarray(x, format="yuv420p"))
        digests.add(open(out, "rb").read())
    assert len(digests) == 1
