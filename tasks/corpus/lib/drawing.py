"""Drawing the planted defects onto frames: footage defects on a shot's take, timeline overlays on the
edited frames (the two levels of ``defects``, which plans them and records their truth)."""

from __future__ import annotations

import cv2
import numpy as np

from tasks.corpus.lib.defects import BLOCK, FONT, NOISE_FIELDS, Planted, _text_style, pixelate
from tasks.corpus.lib.truth import Defect


def _draw_text(frame: np.ndarray, defect: Defect) -> None:
    h, w = frame.shape[:2]
    scale, thick, _, th, _, pad = _text_style(defect.text, w, h, defect.kind)
    x, y, bw, bh = defect.box
    origin = (x + pad, y + pad + th)
    if defect.kind == "subtitle":  # white with a dark outline, as subtitles are burned in
        # The outline is the same text shifted around (a thicker stroke would also widen the advance).
        for dx, dy in ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, 1)):
            cv2.putText(frame, defect.text, (origin[0] + dx, origin[1] + dy), FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
        cv2.putText(frame, defect.text, origin, FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
        return
    roi = frame[y:y + bh, x:x + bw]
    mark = roi.copy()
    if defect.kind == "caption_text":  # a title on a dark band
        mark[:] = (mark * 0.35).astype(np.uint8)
    else:  # a logo: a coloured plate with its name
        mark[:] = (160, 90, 30)
    cv2.putText(mark, defect.text, (pad, pad + th), FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
    roi[:] = cv2.addWeighted(mark, 0.8, roi, 0.2, 0) if defect.kind == "logo" else mark


def codec_blocking(frame: np.ndarray, detail: float) -> np.ndarray:
    """Keep only each 8x8 block's mean plus a little detail, as a starved codec does. The blocks sit on
    the codec's grid: from the frame's top-left corner, the last row/column cut short where the frame
    size is not a multiple of 8 (H.264 pads the coded frame, it does not stretch the blocks)."""
    h, w = frame.shape[:2]
    padded = np.pad(frame, ((0, -h % BLOCK), (0, -w % BLOCK), (0, 0)), mode="edge").astype(np.float32)
    ph, pw = padded.shape[:2]
    means = padded.reshape(ph // BLOCK, BLOCK, pw // BLOCK, BLOCK, -1).mean(axis=(1, 3))
    blocks = np.repeat(np.repeat(means, BLOCK, axis=0), BLOCK, axis=1)[:h, :w]
    return np.clip(np.round((1 - detail) * blocks + detail * frame), 0, 255).astype(np.uint8)


def apply_footage(frame: np.ndarray, planted: list[Planted], t: int) -> np.ndarray:
    """A shot's footage defects on its content frame ``t`` (every frame of the take)."""
    for p in planted:
        kind, box = p.defect.kind, p.defect.box
        if kind == "blur":
            frame = cv2.GaussianBlur(frame, (0, 0), p.params["sigma"])
        elif kind == "noise":
            grain = p.params["fields"][t % NOISE_FIELDS]
            frame = np.clip(frame.astype(np.int16) + grain, 0, 255).astype(np.uint8)
        elif kind == "blocking":
            frame = codec_blocking(frame, p.params["detail"])
        elif kind == "mosaic":
            x, y, bw, bh = box
            frame[y:y + bh, x:x + bw] = pixelate(frame[y:y + bh, x:x + bw], p.params["cell"])
        elif kind == "sticker":
            x, y, side, _ = box
            roi, alpha = frame[y:y + side, x:x + side], p.params["alpha"]
            roi[:] = (roi * (1 - alpha) + p.params["img"] * alpha + 0.5).astype(np.uint8)
        elif kind == "logo":
            _draw_text(frame, p.defect)
    return frame


TIMELINE_ORDER = {"letterbox": 0, "pillarbox": 0, "logo": 1, "caption_text": 2, "subtitle": 2}


def timeline_defects(planted: list[Planted]) -> list[Planted]:
    """The edit-level defects, in drawing order: bars, then logo, then text on top."""
    found = [p for p in planted if p.defect.kind in TIMELINE_ORDER and not (p.defect.kind == "logo" and p.shot is not None)]
    return sorted(found, key=lambda p: TIMELINE_ORDER[p.defect.kind])


def apply_timeline(frame: np.ndarray, i: int, planted: list[Planted]) -> np.ndarray:
    """Timeline frame ``i`` with its edit-level overlays (``planted`` from :func:`timeline_defects`)."""
    drawn = False
    for p in planted:
        d = p.defect
        if not d.start_frame <= i < d.end_frame:
            continue
        if not drawn:
            frame, drawn = frame.copy(), True
        if d.kind in ("letterbox", "pillarbox"):
            x, y, bw, bh = d.box
            frame[:y], frame[y + bh:], frame[:, :x], frame[:, x + bw:] = 0, 0, 0, 0
        else:
            _draw_text(frame, d)
    return frame
