"""Video I/O over PyAV: exact probing, frame-accurate decoding, crash-safe H.264 writing.

A frame index is a 0-based position in presentation order, counted over what the file really
holds (demuxed packets), never over container metadata: every stage's frame ranges depend on it.
Frames and sizes are as displayed: rotation and sample aspect ratio applied (infra/display.py)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.video.frame import PictureType

from infra import storage
from infra.display import display_size, quarter_turns, to_display


class VideoError(Exception):
    """A video that cannot be used; the message names the file, the problem and the fix."""

    def __init__(self, uri: str, reason: str):
        super().__init__(uri, reason)  # both in args, so the error pickles across Ray workers
        self.uri, self.reason = uri, reason

    def __str__(self) -> str:
        return f"{self.uri}: {self.reason}"


@dataclass(frozen=True)
class VideoProbe:
    container: str  # demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str
    width: int
    height: int
    fps: float  # the stream's average frame rate
    num_frames: int  # demuxed frame packets, counted
    duration_s: float
    pix_fmt: str | None
    bit_rate: int  # bits/s; 0 when the container does not say
    rotation: int = 0  # display rotation, degrees counter-clockwise (width/height are already as displayed)


def _frame_packets(path: str) -> Iterator[av.Packet]:
    """Demux (no decode) the first video stream, skipping flush and edit-list pre-roll packets."""
    with av.open(path) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size and not packet.is_discard:
                yield packet


def probe_video(uri: str, max_size: tuple[int, int] | None = None) -> VideoProbe:
    """Probe ``uri`` (path or URI), counting frames exactly by demuxing the whole stream.

    ``max_size`` = (width, height) limit checked before any frame is decoded, so an absurd
    header cannot make us allocate a giant frame. Raises :class:`VideoError` for unusable files.
    """
    with storage.local_copy(uri) as path:
        if os.path.getsize(path) == 0:
            raise VideoError(uri, "empty file (0 bytes); copy it again from the original or remove it")
        try:
            return _probe_local(uri, path, max_size)
        except av.FFmpegError as exc:
            if _looks_like_text(path):
                raise VideoError(
                    uri, "not a video file (text content); remove it or fix its extension"
                ) from exc
            raise VideoError(uri, f"corrupt or truncated: {exc}; re-download or re-encode it") from exc


def _looks_like_text(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    try:
        return b"\0" not in head and bool(head.decode("utf-8").strip())
    except UnicodeDecodeError:
        return False


def _probe_local(uri: str, path: str, max_size: tuple[int, int] | None) -> VideoProbe:
    with av.open(path) as container:
        if not container.streams.video:
            what = "an audio file" if container.streams.audio else "a truncated or corrupt header"
            raise VideoError(uri, f"not a video file (no video stream; {what}); re-download or remove it")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx.width <= 0 or ctx.height <= 0:
            raise VideoError(uri, f"no frame size in the stream header ({ctx.width}x{ctx.height}); re-encode it")
        if max_size and (ctx.width > max_size[0] or ctx.height > max_size[1]):
            raise VideoError(
                uri,
                f"absurd frame size {ctx.width}x{ctx.height} (limit {max_size[0]}x{max_size[1]}); "
                "downscale it or raise stages.ingest.max_width/max_height",
            )
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        facts = dict(
            container=container.format.name,
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            pix_fmt=ctx.pix_fmt,
            bit_rate=int(container.bit_rate or stream.bit_rate or 0),
        )
        indexed = stream.frames  # the header's sample count (0 if unknown): a check, never the count
        decoded, demuxed = False, 0
        stamps: list[tuple[int | None, int]] = []
        for packet in container.demux(stream):
            if not decoded:  # decode only until the first frame: proves the codec data is usable
                frames = packet.decode()
                decoded = bool(frames)
                if decoded:  # sizes as displayed: display matrix and sample aspect ratio applied
                    rotation = quarter_turns(frames[0].rotation) * 90
                    facts["width"], facts["height"] = display_size(
                        ctx.width, ctx.height, ctx.sample_aspect_ratio, rotation)
                    facts["rotation"] = rotation
            demuxed += packet.size > 0
            if packet.size and not packet.is_discard:
                stamps.append((packet.pts, packet.duration))
        time_base = stream.time_base
    if not stamps or not decoded:
        raise VideoError(uri, "decodes to zero frames; re-encode it or remove it")
    if demuxed < indexed:  # e.g. an mp4 with its index up front and its tail cut off
        raise VideoError(
            uri,
            f"corrupt or truncated: header lists {indexed} frames, only {demuxed} are present; re-download it",
        )
    num_frames, duration_s = len(stamps), 0.0
    if time_base and all(pts is not None for pts, _ in stamps):  # first pts to end of last frame
        duration_s = float((max(p + d for p, d in stamps) - min(p for p, _ in stamps)) * time_base)
    if duration_s <= 0 and fps:
        duration_s = num_frames / fps
    if not fps and duration_s:
        fps = num_frames / duration_s
    return VideoProbe(fps=fps, num_frames=num_frames, duration_s=duration_s, **facts)


def _seek_plan(path: str, start: int) -> tuple[dict[int, int], int] | None:
    """For decoding from frame ``start``: {pts: frame index} and the pts of the last keyframe at
    or before ``start``. None when timestamps are missing or repeated (then we decode from 0)."""
    packets = [(p.pts, p.is_keyframe) for p in _frame_packets(path)]
    pts_sorted = sorted(pts for pts, _ in packets) if all(p is not None for p, _ in packets) else []
    if not pts_sorted or len(set(pts_sorted)) != len(pts_sorted):
        return None
    index_of = {pts: i for i, pts in enumerate(pts_sorted)}
    # Presentation rank, not decode position: with B-frames the two differ; with an open GOP the
    # leading frames of a keyframe rank below it and are skipped anyway (index < start).
    keyframes = [index_of[pts] for pts, key in packets if key and index_of[pts] <= start]
    if not keyframes:
        return None
    return index_of, pts_sorted[max(keyframes)]


def iter_frames(
    path: str, start: int = 0, end: int | None = None, fmt: str | None = "rgb24", threads: bool = True
) -> Iterator[tuple[int, np.ndarray | av.VideoFrame]]:
    """Yield ``(index, frame)`` for ``start <= index < end`` of a local video file.

    Frames are ``fmt`` ndarrays (HxWxC for rgb24), or the decoded ``av.VideoFrame`` when ``fmt`` is
    None (cheapest for re-encoding). For ``start > 0`` decoding begins at the nearest keyframe and
    indices come from each frame's timestamp rank, so they match a decode from frame 0 exactly.
    """
    plan = _seek_plan(path, start) if start > 0 else None
    with av.open(path) as container:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        sar = stream.codec_context.sample_aspect_ratio
        index_of, seek_pts = plan or ({}, None)
        if plan and index_of[seek_pts] > 0:
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        next_index = 0
        for frame in container.decode(stream):
            if plan:
                index = index_of.get(frame.pts)
                if index is None:
                    raise VideoError(
                        path, f"decoded a frame with unknown timestamp {frame.pts}; re-encode it"
                    )
            else:
                index, next_index = next_index, next_index + 1
            if end is not None and index >= end:
                return
            if index >= start:
                frame = to_display(frame, sar)  # upright, square pixels
                yield index, frame if fmt is None else frame.to_ndarray(format=fmt)


def _rate(fps: float | Fraction) -> Fraction:  # 1001 covers NTSC: float(30000/1001) -> 30000/1001 again
    return fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """H.264 (libx264, yuv420p) at a constant frame rate: frame k gets pts k in time base 1/fps;
    single-threaded by default so the bytes are reproducible (``threads=0``: x264 picks, faster).
    Frames go to a hidden temp file beside ``path`` that replaces ``path`` only on a clean
    :meth:`close`, so a crash never leaves a half-written video under the real name."""

    def __init__(
        self,
        path: str,
        fps: float | Fraction,
        width: int,
        height: int,
        crf: int = 18,
        preset: str = "veryfast",
        threads: int = 1,
    ):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(
                f"yuv420p needs a positive even frame size, got {width}x{height}; crop one pixel"
            )
        self.path, self.width, self.height, self.num_frames = path, width, height, 0
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".mp4.part")
        os.close(fd)
        rate = _rate(fps)
        try:
            self._container = av.open(self._tmp, "w", format="mp4", options={"movflags": "+faststart"})
            self._stream = self._container.add_stream(
                # A fixed thread count (frame threads limit motion search) and no mbtree (with B-frames
                # its lookahead made one clip encoded 30 times in one process give 4 different files):
                # the same frames give the same bytes on every run and machine.
                "libx264", rate=rate, options={"crf": str(crf), "preset": preset, "threads": str(threads),
                                               "x264-params": "mbtree=0"}
            )
            self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
            self._stream.codec_context.time_base = 1 / rate
        except Exception:
            os.unlink(self._tmp)
            raise

    def write(self, frame: np.ndarray | av.VideoFrame) -> None:
        """Append one frame: an HxWx3 uint8 RGB array or a decoded ``av.VideoFrame``."""
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if (frame.width, frame.height) != (self.width, self.height):
            raise ValueError(f"frame is {frame.width}x{frame.height}, writer is {self.width}x{self.height}")
        frame.pts, frame.time_base = self.num_frames, self._stream.codec_context.time_base
        frame.pict_type = PictureType.NONE  # a decoded I-frame flag would force x264's keyframes
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder and publish the file under its real name."""
        if not self.num_frames:
            self.abort()
            raise ValueError(f"{self.path}: no frames were written")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            self._container.close()
        except (av.FFmpegError, ValueError):
            pass  # an encoder with nothing in it may refuse to write a trailer; the file goes anyway
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    frames: Iterable[np.ndarray | av.VideoFrame],
    path: str,
    fps: float | Fraction,
    crf: int = 18,
    preset: str = "veryfast",
) -> int:
    """Encode ``frames`` to an H.264 mp4 at ``path``; returns the number of frames written."""
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    height, width = first.shape[:2] if isinstance(first, np.ndarray) else (first.height, first.width)
    with VideoWriter(path, fps, width, height, crf, preset) as writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
    return writer.num_frames
