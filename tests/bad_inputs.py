"""A folder of hostile and unusual inputs, each with what ingest must make of it.

``build(root)`` writes every kind and returns ``{entry path: Expect}``: a row (good, or with an
error containing a phrase), an image row, or a counted skip with its reason. Media are made with
real encoders (x264, VP9, MPEG-4 Part 2, MPEG-2, raw video, AAC, JPEG/PNG), never copied in.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from infra import inputs


@dataclass(frozen=True)
class Expect:
    kind: str  # "video" | "image" | "error" | "skip" | "row" (either a good or an error row)
    detail: str = ""  # error phrase / skip reason / "WxH" as displayed
    clips: bool = False  # long enough that segment + clips must yield at least one clip


def _frame(i: int, w: int, h: int) -> np.ndarray:
    """A calm scene (one shot): static gradient, a small square drifting one pixel per frame, and
    a bright top-left marker that tells upright from turned."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 200 // max(w - 1, 1) + 20, y * 200 // max(h - 1, 1) + 20, np.full_like(x, 90)], -1)
    img = img.astype(np.uint8)
    side = max(min(w, h) // 5, 1)
    left, top = (i // 2) % max(w - side, 1), h // 2 - side // 2
    img[top: top + side, left: left + side] = (200, 60, 60)
    img[: max(h // 6, 1), : max(w // 6, 1)] = 255
    return img


def encode(path: str, n: int = 48, w: int = 64, h: int = 36, fps: float = 24, codec: str = "libx264",
           fmt: str | None = None, pix_fmt: str = "yuv420p", rotation: int = 0, sar: Fraction | None = None,
           pts: list[int] | None = None, faststart: bool = True) -> str:
    options = {"movflags": "+faststart"} if faststart and path.endswith((".mp4", ".mov")) else {}
    with av.open(path, "w", format=fmt, options=options) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        if sar:
            stream.codec_context.sample_aspect_ratio = sar
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(_frame(i, w, h), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _audio_only(path: str) -> str:
    with av.open(path, "w") as out:
        stream = out.add_stream("aac", rate=44100)
        samples = (np.sin(np.arange(44100) / 20) * 0.3).astype(np.float32)[None, :]
        for start in range(0, 44100, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _exif_rotated_jpeg(path: str) -> str:
    img = Image.fromarray(_frame(0, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed turned 90 degrees clockwise: portrait 40x80
    img.save(path, exif=exif.tobytes())
    return path


def build(root: str) -> dict[str, Expect]:
    os.makedirs(root, exist_ok=True)
    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    out: dict[str, Expect] = {}
    good = encode(j("good.mp4"), n=96)
    out[good] = Expect("video", "64x36", clips=True)
    out[encode(j("GOOD_UPPER.MP4"), n=84)] = Expect("video", "64x36", clips=True)
    open(j("zero.mp4"), "wb").close()
    out[j("zero.mp4")] = Expect("error", "empty file")
    data = open(good, "rb").read()
    with open(j("truncated_index_first.mp4"), "wb") as fh:  # moov up front, media cut short
        fh.write(data[: len(data) // 2])
    out[j("truncated_index_first.mp4")] = Expect("error", "truncated")
    tail = encode(j("tail_index.src"), n=96, fmt="mp4", faststart=False)
    with open(j("truncated_no_index.mp4"), "wb") as fh:  # moov at the end, which is cut off
        fh.write(open(tail, "rb").read()[: os.path.getsize(tail) // 2])
    os.unlink(tail)
    out[j("truncated_no_index.mp4")] = Expect("error", "corrupt or truncated")
    with open(j("random.mp4"), "wb") as fh:
        fh.write(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    out[j("random.mp4")] = Expect("error", "corrupt or truncated")
    with open(j("text.mp4"), "w") as fh:
        fh.write("this is a shopping list, not a film\n" * 20)
    out[j("text.mp4")] = Expect("error", "not a video file (text content)")
    out[_audio_only(j("audio_only.mp4"))] = Expect("error", "an audio file")
    out[encode(j("one_frame.mp4"), n=1)] = Expect("video", "64x36")
    out[encode(j("odd_17x9.avi"), n=72, w=17, h=9, codec="rawvideo", pix_fmt="bgr24")] = Expect("video", "17x9", clips=True)
    out[encode(j("portrait.mp4"), n=72, w=36, h=64)] = Expect("video", "36x64", clips=True)
    out[encode(j("phone_rotated.mp4"), n=72, rotation=90)] = Expect("video", "36x64", clips=True)
    out[encode(j("anamorphic.mp4"), n=72, w=48, h=36, sar=Fraction(4, 3))] = Expect("video", "64x36", clips=True)
    out[encode(j("fps60.mp4"), n=180, fps=60)] = Expect("video", "64x36", clips=True)
    vfr = [round(1000 * t) for t in np.cumsum([0] + [1 / 24 if i % 3 else 1 / 12 for i in range(71)])]
    out[encode(j("vfr.mkv"), n=72, pts=vfr)] = Expect("video", "64x36", clips=True)
    out[encode(j("vp9.webm"), n=72, codec="libvpx-vp9")] = Expect("video", "64x36", clips=True)
    out[encode(j("mpeg4_in.avi"), n=72, codec="mpeg4")] = Expect("video", "64x36", clips=True)
    out[encode(j("mpeg2.ts"), n=75, codec="mpeg2video", fmt="mpegts", fps=25)] = Expect("video", "64x36", clips=True)
    out[encode(j("film_é_日本 ✓.mp4"), n=72, w=64, h=36)] = Expect("video", "64x36", clips=True)
    shutil.copy(good, j("z_copy_of_good.mp4"))
    out[j("z_copy_of_good.mp4")] = Expect("error", "duplicate content")
    garbled = bytearray(open(j("fps60.mp4"), "rb").read())
    middle = len(garbled) // 2
    garbled[middle: middle + 400] = bytes(400)
    with open(j("garbled_middle.mp4"), "wb") as fh:
        fh.write(garbled)
    out[j("garbled_middle.mp4")] = Expect("row")  # damaged mid-stream: a row, with or without an error
    os.makedirs(j("sub"))
    out[encode(j("sub", "nested.mov"), n=72)] = Expect("video", "64x36", clips=True)
    Image.fromarray(_frame(3, 64, 36)).save(j("photo.jpg"), quality=92)
    out[j("photo.jpg")] = Expect("image", "64x36", clips=True)
    Image.fromarray(_frame(5, 50, 30)).save(j("drawing.png"))
    out[j("drawing.png")] = Expect("image", "50x30", clips=True)
    out[_exif_rotated_jpeg(j("phone_photo.jpg"))] = Expect("image", "40x80", clips=True)
    with open(j("broken.jpg"), "wb") as fh:
        fh.write(open(j("photo.jpg"), "rb").read()[:300])
    out[j("broken.jpg")] = Expect("error", "image")
    os.makedirs(j("folder.mp4"))
    out[j("folder.mp4")] = Expect("skip", inputs.FOLDER)
    os.symlink(j("does_not_exist.mp4"), j("dangling.mp4"))
    out[j("dangling.mp4")] = Expect("skip", inputs.DANGLING)
    shutil.copy(good, j(".hidden.mp4"))
    out[j(".hidden.mp4")] = Expect("skip", inputs.HIDDEN)
    open(j(".DS_Store"), "wb").write(b"\0\0\0\1Bud1")
    out[j(".DS_Store")] = Expect("skip", inputs.HIDDEN)
    os.makedirs(j(".cache"))
    shutil.copy(good, j(".cache", "inside.mp4"))
    out[j(".cache")] = Expect("skip", inputs.HIDDEN_DIR)
    with open(j("README.txt"), "w") as fh:
        fh.write("notes\n")
    out[j("README.txt")] = Expect("skip", inputs.SIDECAR)
    open(j("no_extension"), "wb").write(data[:1000])
    out[j("no_extension")] = Expect("skip", inputs.UNSUPPORTED)
    os.symlink(j("portrait.mp4"), j("z_link_to_portrait.mp4"))
    out[j("z_link_to_portrait.mp4")] = Expect("error", "duplicate content")  # a link is followed: same bytes
    return out
