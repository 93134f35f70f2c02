"""Frames as they are meant to be seen: the container's display rotation and sample aspect ratio.

Phones store portrait video as landscape pixels plus a display matrix; anamorphic sources store
non-square pixels plus a sample aspect ratio (SAR). Players apply both, so a clip that ignores
them comes out sideways or squeezed. Every decode here applies them (as FFmpeg's ``autorotate``
and ``scale=iw*sar:ih`` do), so every frame index, size and clip is upright with square pixels.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np


def quarter_turns(rotation: float | None) -> int:
    """The display matrix's counter-clockwise angle (PyAV's ``VideoFrame.rotation``, -180..180)
    as 0..3 quarter turns; angles that are not multiples of 90 round to the nearest one."""
    return round((rotation or 0) / 90) % 4


def square_width(width: int, sar: Fraction | None) -> int:
    """Width once pixels are made square (height kept, like FFmpeg's ``scale=iw*sar:ih``)."""
    if not sar or sar == 1:
        return width
    return max(2, round(width * float(sar)))


def display_size(width: int, height: int, sar: Fraction | None, rotation: float | None) -> tuple[int, int]:
    """(width, height) as displayed."""
    width = square_width(width, sar)
    return (height, width) if quarter_turns(rotation) % 2 else (width, height)


def to_display(frame: av.VideoFrame, sar: Fraction | None) -> av.VideoFrame:
    """``frame`` resampled to square pixels and turned upright; unchanged when it already is."""
    turns = quarter_turns(frame.rotation)
    width = square_width(frame.width, sar)
    if width != frame.width:
        frame = frame.reformat(width=width, height=frame.height)
    if turns:
        pixels = np.rot90(frame.to_ndarray(format="rgb24"), k=turns)  # counter-clockwise, like the matrix
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
    return frame
