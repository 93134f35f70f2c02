"""Burned-in text / subtitle filter (report section 3.1: "subtitle", "text" element filters).

OCR (see :mod:`tasks.curate.filters.ocr`) reads a few samples; lines wholly inside a corner of the picture
(between any bars) are the logo filter's. ``score_text``: share of the read samples showing text; ``score_text_area``: the largest
share of the frame covered by text in one sample; ``score_subtitle``: share of samples with a
line in the bottom fifth (where subtitles sit; a crop cannot remove text elsewhere).
"""

from __future__ import annotations

import pyarrow as pa

from infra.config_filters import TextConfig
from tasks.curate.filters.frames import ClipFrames
from tasks.curate.filters.ocr import in_picture_corner, make_reader, picture_share, read_clip

SUBTITLE_BAND = 0.8  # a line whose centre lies below this share of the height


class TextFilter:
    name = "text"
    columns = {"score_text": pa.float64(), "score_text_area": pa.float64(), "score_subtitle": pa.float64()}

    def __init__(self, cfg: TextConfig, reader=None):
        self.cfg = cfg
        self.reader = reader or make_reader(cfg)

    def __call__(self, clip: ClipFrames) -> dict:
        picture = picture_share(clip)
        pages = [[ln for ln in lines if in_picture_corner(ln.box, picture, self.cfg.corner_zone) is None]
                 for lines in read_clip(clip, self.reader, self.cfg)]
        n = max(len(pages), 1)
        return {
            "score_text": sum(bool(p) for p in pages) / n,
            "score_text_area": max((sum(ln.box[2] * ln.box[3] for ln in p) for p in pages), default=0.0),
            "score_subtitle": sum(any(ln.box[1] + ln.box[3] / 2 > SUBTITLE_BAND for ln in p) for p in pages) / n,
        }
