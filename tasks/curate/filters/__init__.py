"""The score stage's filters (report section 3.1), one small module each.

A frame filter is a class built once per actor from its config, ``filter(clip: ClipFrames) -> dict``
of its ``columns``; row filters (basic, vtss) read the clip-table row instead. :func:`build_filters`
builds the enabled ones, sharing one OCR reader between text and logo. :func:`default_thresholds`
gives each filter's own decision (``configs/filters/detect.yaml``, which the dataset profiles also
reference), what the benchmark measures.
"""

from __future__ import annotations

import pyarrow as pa

from infra.config_datasets import FILTERS_DIR, load_columns
from infra.config_detect import load_detectors
from infra.config_filters import ScoreConfig
from tasks.curate.filters.aesthetic import AestheticFilter
from tasks.curate.filters.basic import BasicFilter
from tasks.curate.filters.black import BlackFilter
from tasks.curate.filters.border import BorderFilter
from tasks.curate.filters.dedup import GROUP_COLUMNS, DedupFilter
from tasks.curate.filters.logo import LogoFilter
from tasks.curate.filters.mosaic import MosaicFilter
from tasks.curate.filters.motion import MotionFilter
from tasks.curate.filters.quality import QualityFilter, VTSSFilter
from tasks.curate.filters.static import StaticFilter
from tasks.curate.filters.sticker import StickerFilter
from tasks.curate.filters.text import TextFilter

FRAME_FILTERS = ("black", "static", "mosaic", "text", "logo", "border", "sticker", "dedup", "aesthetic",
                 "motion", "quality")
_CLASSES = {"black": BlackFilter, "static": StaticFilter, "mosaic": MosaicFilter, "text": TextFilter,
            "logo": LogoFilter, "border": BorderFilter, "sticker": StickerFilter, "dedup": DedupFilter,
            "aesthetic": AestheticFilter, "motion": MotionFilter, "quality": QualityFilter}


def _sub(cfg: ScoreConfig, name: str):
    return getattr(cfg, "quality" if name in ("quality", "vtss") else name)


def build_filters(cfg: ScoreConfig, names: tuple[str, ...] = FRAME_FILTERS) -> dict[str, object]:
    """Enabled frame filters among ``names``, models loaded once; text and logo share one OCR reader."""
    built: dict[str, object] = {}
    reader = None
    for name in names:
        if not _sub(cfg, name).enabled:
            continue
        if name in ("text", "logo"):
            if reader is None:
                from tasks.curate.filters.ocr import make_reader

                reader = make_reader(cfg.text)
            built[name] = TextFilter(cfg.text, reader) if name == "text" else LogoFilter(cfg.logo, cfg.text, reader, cfg.sticker)
        else:
            built[name] = _CLASSES[name](_sub(cfg, name))
    return built


def score_columns() -> dict[str, pa.DataType]:
    """Every column the stage adds, in a fixed order (disabled filters leave theirs null)."""
    cols: dict[str, pa.DataType] = dict(BasicFilter.columns)
    for name in FRAME_FILTERS:
        cols.update(_CLASSES[name].columns)
    cols.update(GROUP_COLUMNS)
    cols.update(VTSSFilter.columns)
    return cols


def default_thresholds() -> dict[str, dict]:
    """Per filter: the column the score stage writes and the bound a clip must respect to pass (``max``:
    reject above, ``min``: reject below): each filter's own decision, stated once in
    ``configs/filters/detect.yaml`` (chosen on the synthetic corpus, measured by benchmarks/filters.py)."""
    columns = load_columns(FILTERS_DIR)
    return {name: {**entry, "column": columns.get(entry["column"], entry["column"])}
            for name, entry in load_detectors(FILTERS_DIR).items()}


def rejects(row: dict, rule: dict) -> bool:
    """Does ``row`` fail ``rule`` (one entry of :func:`default_thresholds`)? Null scores never reject."""
    value = row.get(rule["column"])
    if value is None:
        return False
    if rule.get("max") is not None and value > rule["max"]:
        return True
    return rule.get("min") is not None and value < rule["min"]
