"""OCR backends for the text and logo filters (report section 3.1: subtitles / text, logos).

PaddleOCR is the production backend the design card names; it downloads its models at first use,
so the offline default is RapidOCR, whose wheel ships the same PP-OCR detector and recogniser as
ONNX files. Both return :class:`TextLine` rows; the backend is chosen by ``TextConfig.backend``.
The lines of one clip are read once and shared by both filters (:func:`read_clip`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.config_filters import TextConfig
from tasks.curate.filters.border import clip_picture_box
from tasks.curate.filters.frames import ClipFrames


@dataclass(frozen=True)
class TextLine:
    box: tuple[float, float, float, float]  # x, y, w, h as shares of the frame
    text: str
    score: float


def _box(points, width: int, height: int) -> tuple[float, float, float, float]:
    pts = np.asarray(points, float).reshape(-1, 2)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height


class RapidOcrBackend:
    """PP-OCR det + rec through onnxruntime, one thread (actors, not threads, give parallelism)."""

    def __init__(self, cfg: TextConfig):
        from rapidocr import RapidOCR

        self.engine = RapidOCR(params={
            "Global.log_level": "error", "Global.use_cls": False,
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            # The default upscales the short side to 736 px: 8x the work for small analysis frames.
            "Det.limit_type": "max", "Det.limit_side_len": 640,
        })

    def read(self, rgb: np.ndarray) -> list[TextLine]:
        out = self.engine(np.ascontiguousarray(rgb[:, :, ::-1]))  # RapidOCR expects BGR like cv2
        if out.txts is None:
            return []
        h, w = rgb.shape[:2]
        return [TextLine(_box(b, w, h), t, float(s)) for b, t, s in zip(out.boxes, out.txts, out.scores, strict=True)]


class PaddleOcrBackend:
    """Production backend: PaddleOCR (``pip install paddleocr paddlepaddle``; fetches its models once)."""

    def __init__(self, cfg: TextConfig):
        try:
            from paddleocr import PaddleOCR
        except ImportError as exc:
            raise ImportError("score.text.backend=paddleocr needs `pip install paddleocr paddlepaddle`; "
                              "the offline default is backend=rapidocr") from exc
        self.engine = PaddleOCR(use_textline_orientation=False, lang="en")

    def read(self, rgb: np.ndarray) -> list[TextLine]:
        h, w = rgb.shape[:2]
        lines = []
        for page in self.engine.predict(np.ascontiguousarray(rgb[:, :, ::-1])):
            for poly, text, score in zip(page["dt_polys"], page["rec_texts"], page["rec_scores"], strict=True):
                lines.append(TextLine(_box(poly, w, h), text, float(score)))
        return lines


BACKENDS = {"rapidocr": RapidOcrBackend, "paddleocr": PaddleOcrBackend}


def make_reader(cfg: TextConfig):
    return BACKENDS[cfg.backend](cfg)


def read_clip(clip: ClipFrames, reader, cfg: TextConfig) -> list[list[TextLine]]:
    """Confident text lines of ``ocr_fps`` samples (at most ``max_frames``), read once per clip."""
    if "ocr" not in clip._cache:
        seconds = clip.num_frames / clip.fps
        picks = clip.pick(min(cfg.max_frames, max(1, round(seconds * cfg.ocr_fps))))
        clip._cache["ocr"] = [
            [line for line in reader.read(clip.samples[i])
             if line.score >= cfg.min_confidence and len(line.text.strip()) >= cfg.min_chars
             and line.box[3] <= cfg.max_line_height]
            for i in picks
        ]
    return clip._cache["ocr"]


def picture_share(clip: ClipFrames) -> tuple[float, float, float, float]:
    """The picture inside any bars, as shares of the frame (like :class:`TextLine` boxes)."""
    x, y, w, h = clip_picture_box(clip)
    height, width = clip.samples.shape[1:3]
    return x / width, y / height, w / width, h / height


def in_picture_corner(box: tuple[float, float, float, float], picture: tuple[float, float, float, float],
                      zone: float) -> str | None:
    """:func:`in_corner` measured in the picture between bars: a take's logo sits in the picture's
    corner, a channel's logo on a bar is left of (or above) the picture, in its corner too."""
    px, py, pw, ph = picture
    x, y, w, h = box
    return in_corner(((x - px) / pw, (y - py) / ph, w / pw, h / ph), zone)


def in_corner(box: tuple[float, float, float, float], zone: float) -> str | None:
    """Which corner ("tl", "tr", "bl", "br") holds the box wholly, if any."""
    x, y, w, h = box
    horizontal = "l" if x + w <= zone else "r" if x >= 1 - zone else None
    vertical = "t" if y + h <= zone else "b" if y >= 1 - zone else None
    return vertical + horizontal if horizontal and vertical else None
