"""The shared decode: one pass over a clip feeds every frame-based filter (issue 3 throughput target).

Two views come out of that one pass, because filters need different things:
- ``thumbs``: EVERY frame as a small grey image. Temporal defects are short (a black flash is 3 frames
  at 24 fps, report section 3.1 "black screen"), so black / frozen / motion must see each frame; at
  ``thumb_width`` pixels that costs almost nothing.
- ``samples``: RGB frames at ``sample_fps`` and ``analysis_width`` (never upscaled) for the spatial
  filters (text, mosaic, borders, logo, stickers, dedup, aesthetic, quality).
- ``luma``: the same samples' true luma (the decoded Y plane, scaled alike). RGB -> grey does not give
  it back exactly: the 4:2:0 chroma round trip leaves a +-1 ripple of period 2, as large as the
  steps of a faint mosaic (section 3.1 "mosaic").
Scaling happens inside FFmpeg's swscale, so full-size RGB arrays of unsampled frames are never built.
One swscale context per view serves the whole clip: ``VideoFrame.reformat`` builds a fresh one for
every call, and setting up an area-filter context cost more than the scaling itself (the decode ran
at a third of a plain decode's speed); the same context gives the same pixels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from infra.config_filters import DecodeConfig


@dataclass
class ClipFrames:
    fps: float
    width: int  # the clip's own size, before analysis scaling
    height: int
    thumbs: np.ndarray  # (N, h, w) uint8 grey, every frame
    samples: np.ndarray  # (S, H, W, 3) uint8 RGB
    sample_index: np.ndarray  # (S,) frame index of each sample
    luma: np.ndarray  # (S, H, W) uint8 Y plane of the samples (a pointwise map of the decoded Y)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.thumbs)

    @cached_property
    def grey_samples(self) -> np.ndarray:
        """(S, H, W) uint8 luma of the RGB samples (BT.601, as OpenCV)."""
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in self.samples])

    def pick(self, count: int) -> np.ndarray:
        """Indices of ``count`` samples spread evenly over the clip (all when fewer)."""
        n = len(self.samples)
        if count >= n:
            return np.arange(n)
        return np.unique(np.linspace(0, n - 1, count).round().astype(int))


def _size(width: int, height: int, target: int) -> tuple[int, int]:
    """Scale to ``target`` width (never up), keeping the aspect ratio, even sides for swscale."""
    if width <= target:
        return width, height
    return target, max(2, round(height * target / width / 2) * 2)


def sample_plan(num_frames: int, fps: float, cfg: DecodeConfig) -> np.ndarray:
    """Frame indices of the RGB samples: every ``fps/sample_fps`` frames, at most ``max_samples``."""
    if num_frames <= 0:
        return np.zeros(0, int)
    step = max(1.0, fps / cfg.sample_fps, num_frames / cfg.max_samples)
    return np.unique(np.minimum(np.arange(step / 2, num_frames, step).astype(int), num_frames - 1))


def frames_from_decoded(decoded: Iterable[av.VideoFrame], num_frames: int, fps: float, cfg: DecodeConfig) -> ClipFrames:
    """Build both views from decoded frames (a generator: nothing but the views is kept)."""
    wanted = set(sample_plan(num_frames, fps, cfg).tolist())
    thumbs, samples, luma, index = [], [], [], []
    width = height = 0
    to_thumb, to_rgb, to_luma = VideoReformatter(), VideoReformatter(), VideoReformatter()

    def sample(frame: av.VideoFrame, i: int) -> None:
        samples.append(to_rgb.reformat(frame, width=aw, height=ah, format="rgb24", interpolation="AREA").to_ndarray())
        luma.append(to_luma.reformat(frame, width=aw, height=ah, format="gray", interpolation="AREA").to_ndarray())
        index.append(i)

    for i, frame in enumerate(decoded):
        if not thumbs:
            width, height = frame.width, frame.height
            tw, th = _size(width, height, cfg.thumb_width)
            aw, ah = _size(width, height, cfg.analysis_width)
        thumbs.append(to_thumb.reformat(frame, width=tw, height=th, format="gray", interpolation="AREA").to_ndarray())
        if i in wanted:
            sample(frame, i)
        last = frame
    if not thumbs:
        raise ValueError("the clip decodes to zero frames")
    if not samples:  # the file is shorter than the clip table says: still one sample
        sample(last, len(thumbs) - 1)
    return ClipFrames(fps, width, height, np.stack(thumbs), np.stack(samples), np.array(index), np.stack(luma))


def decode_clip(path: str, num_frames: int, fps: float, cfg: DecodeConfig) -> ClipFrames:
    """Decode a local clip file once. ``num_frames`` (from the clip table) plans the samples."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return frames_from_decoded(container.decode(stream), num_frames, fps, cfg)


def frames_from_arrays(rgb: np.ndarray, fps: float, cfg: DecodeConfig) -> ClipFrames:
    """The same views from an in-memory (N, H, W, 3) RGB clip: for unit tests on synthetic frames."""
    return frames_from_decoded((av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24") for f in rgb),
                               len(rgb), fps, cfg)
