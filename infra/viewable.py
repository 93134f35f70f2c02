"""Videos a person can watch in MLflow: tiny-profile samples are 64x32 px, a speck in a browser.

``viewable`` writes a nearest-neighbour upscale (pixels stay visible as pixels: the point is to see what
the model made, not to hide it behind smoothing) and a frame strip PNG that shows the clip's motion at a
glance without pressing play.
"""

from __future__ import annotations

import os

import av
import numpy as np
from PIL import Image

from infra.video import iter_frames, write_video

MIN_WIDTH = 480  # about a third of a laptop browser window
STRIP_FRAMES = 8


def upscale_factor(width: int, height: int, min_width: int = MIN_WIDTH) -> int:
    """The integer factor that brings ``width`` to at least ``min_width`` (1 for videos already that wide);
    even output sizes, because H.264 with yuv420p needs them."""
    factor = max(1, -(-min_width // max(width, 1)))
    while (width * factor) % 2 or (height * factor) % 2:
        factor += 1
    return factor


def _fps(path: str) -> float:
    with av.open(path) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else 24.0


def viewable(path: str, out_dir: str, min_width: int = MIN_WIDTH) -> list[str]:
    """``<stem>_view.mp4`` (upscaled to at least ``min_width``) and ``<stem>_strip.png`` (STRIP_FRAMES
    evenly spaced frames side by side) for the mp4 at ``path``; returns the files written."""
    frames = [f for _, f in iter_frames(path)]
    if not frames:
        raise ValueError(f"{path}: no frames to make viewable")
    height, width = frames[0].shape[:2]
    k = upscale_factor(width, height, min_width)
    stem = os.path.splitext(os.path.basename(path))[0]
    os.makedirs(out_dir, exist_ok=True)
    view = os.path.join(out_dir, f"{stem}_view.mp4")
    write_video((np.repeat(np.repeat(f, k, axis=0), k, axis=1) for f in frames), view, fps=_fps(path))
    picks = np.linspace(0, len(frames) - 1, min(STRIP_FRAMES, len(frames))).round().astype(int)
    tile = max(1, -(-160 // width))  # each strip frame at least 160 px wide
    gap = 4
    strip = np.full((height * tile, len(picks) * (width * tile + gap) - gap, 3), 255, np.uint8)
    for i, idx in enumerate(picks):
        x = i * (width * tile + gap)
        strip[:, x : x + width * tile] = np.repeat(np.repeat(frames[idx], tile, axis=0), tile, axis=1)
    png = os.path.join(out_dir, f"{stem}_strip.png")
    Image.fromarray(strip).save(png)
    return [view, png]
