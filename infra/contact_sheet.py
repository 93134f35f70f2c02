"""Contact sheets: a labelled grid of video thumbnails, logged as an MLflow artifact per stage."""

from __future__ import annotations

import os
import tempfile

from PIL import Image, ImageDraw

from infra import storage
from infra.video import iter_frames, probe_video

_LABEL_HEIGHT = 14
_BACKGROUND = (24, 24, 24)


def _thumbnail(uri: str, index: int | None, width: int) -> Image.Image:
    """One frame scaled to ``width``; decodes from the keyframe before it, not the whole video."""
    with storage.local_copy(uri) as path:
        if index is None:
            index = probe_video(path).num_frames // 2  # a demux, no decode
        frame = next((f for _, f in iter_frames(path, index, index + 1, fmt=None)), None)
        if frame is None:
            raise IndexError(f"frame {index} is past the end")
        height = max(1, round(frame.height * width / frame.width))
        return frame.to_image(width=width, height=height)


def contact_sheet(
    items: list[tuple[str, int | None, str]], out_png: str, thumb_width: int = 160, columns: int = 4
) -> str:
    """Grid PNG of ``(video uri, frame index or None for the middle frame, label)`` items.

    A video that cannot be read becomes a dark tile whose label says why: a contact sheet is a
    diagnostic and must not fail the stage that logs it. Returns ``out_png``.
    """
    thumbs = []
    for uri, index, label in items:
        try:
            thumbs.append((_thumbnail(uri, index, thumb_width), label))
        except Exception as exc:
            thumbs.append((None, f"{label} [unreadable: {type(exc).__name__}]"))
    tile_height = max((t.height for t, _ in thumbs if t is not None), default=thumb_width * 9 // 16)
    columns = max(1, min(columns, len(thumbs)))
    rows = max(1, -(-len(thumbs) // columns))
    cell = (thumb_width, tile_height + _LABEL_HEIGHT)
    sheet = Image.new("RGB", (cell[0] * columns, cell[1] * rows), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, (thumb, label) in enumerate(thumbs):
        x, y = (i % columns) * cell[0], (i // columns) * cell[1]
        if thumb is not None:
            sheet.paste(thumb, (x, y))
        draw.text((x + 2, y + tile_height + 1), _fit(draw, label, thumb_width - 4), fill=(230, 230, 230))
    if storage.is_remote(out_png):
        with tempfile.TemporaryDirectory() as scratch:
            local = os.path.join(scratch, "sheet.png")
            sheet.save(local)
            storage.upload(local, out_png)
    else:
        storage.makedirs(os.path.dirname(os.path.abspath(out_png)))
        sheet.save(out_png)
    return out_png


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """``text``, cut and ended with "..." if it is wider than ``width`` pixels."""
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "...") > width:
        text = text[:-1]
    return text + "..."
