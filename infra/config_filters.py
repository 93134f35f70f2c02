"""Configuration of the ``score`` stage (report section 3.1, "data processing").

One sub-config per filter. Each says how a score is *measured*, never where a clip is cut off:
thresholds belong to the dataset profiles (``configs/filters/*.yaml``), so re-thresholding never
re-scores. The shared decode (:class:`DecodeConfig`) feeds every frame-based filter.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from infra.config_base import Cfg as _Cfg
from infra.config_base import StageResources


class DecodeConfig(_Cfg):
    """One decode per clip: every frame as a small grey thumbnail (temporal filters need every
    frame: a planted black flash lasts 3 frames), plus RGB samples at ``sample_fps``."""

    sample_fps: float = Field(4.0, gt=0, le=30, description="RGB samples per second handed to spatial filters")
    max_samples: int = Field(24, ge=2, le=256, description="Cap on RGB samples per clip (long clips are strided)")
    analysis_width: int = Field(320, ge=64, le=1920, description="Width RGB samples are scaled down to (never up)")
    thumb_width: int = Field(96, ge=16, le=512, description="Width of the per-frame grey thumbnails")


class BlackConfig(_Cfg):
    enabled: bool = True
    luma_max: float = Field(24.0, ge=0, le=255, description="A frame is black when its 99th-percentile luma is below this")


class StaticConfig(_Cfg):
    enabled: bool = True
    diff_max: float = Field(6.0, ge=0, le=255, description="A frozen frame has no thumbnail pixel this different from the previous one")
    relative_max: float = Field(0.2, gt=0, le=1, description="... and a mean difference below this share of the clip's median")


class MosaicConfig(_Cfg):
    """Lattice of flat cells, fixed over moving footage or moving with it (tasks/curate/filters/mosaic.py)."""

    enabled: bool = True
    frames: int = Field(24, ge=1, le=256, description="Luma samples examined together (the lattice is fixed, the footage moves)")
    quantile: float = Field(0.9, gt=0, le=1, description="Quantile over samples of each pixel's step to its neighbour")
    step_min: float = Field(5.0, ge=1, le=255, description="Luma step that can be a cell edge")
    ridge_ratio: float = Field(2.0, ge=1, le=100, description="A cell edge steps this many times more than the two pixels either side")
    line_run: int = Field(7, ge=3, le=64, description="Pixels along an edge over which it must continue")
    run_share: float = Field(0.7, gt=0, le=1, description="Share of those pixels that must step")
    window: int = Field(32, ge=8, le=256, description="Square window judged at once, in analysis pixels")
    line_density: float = Field(0.05, gt=0, le=1, description="Share of a window's pixels on edges, per axis (cells up to ~1/this px)")
    quiet_ratio: float = Field(0.35, gt=0, le=1, description="Change off the edges at most this share of the change on them")
    codec_share: float = Field(0.3, gt=0, le=1, description="Edges on the 8x8 codec grid in both axes at or above this share: blockiness, not a mosaic")
    comb_lines: int = Field(4, ge=0, le=32, description="One-axis mosaics: regular edge columns needed in a window (0: two axes only)")
    comb_flat: float = Field(3.0, ge=0, le=255, description="One-axis mosaics: mean luma step across the edges at most this (content flat that way)")
    comb_extent: float = Field(0.5, gt=0, le=1, description="One-axis mosaics: edges covering more of the frame's height are the scene's stripes")
    comb_stride: int = Field(4, ge=1, le=32, description="One-axis mosaics: window positions examined every this many pixels")
    frame_step_min: float = Field(3.0, ge=1, le=255, description="Per-sample pass (mosaics that move): luma step that can be a cell edge in one sample")
    frame_quantile: float = Field(0.7, ge=0, le=1, description="Per-sample pass: this quantile over samples of the pixelated area is the clip's")


class TextConfig(_Cfg):
    enabled: bool = True
    backend: Literal["rapidocr", "paddleocr"] = Field(
        "rapidocr", description="rapidocr: PP-OCR ONNX models shipped in its wheel (offline); paddleocr: production"
    )
    ocr_fps: float = Field(2.0, gt=0, le=30, description="Samples per second read by OCR")
    max_frames: int = Field(8, ge=1, le=64)
    min_confidence: float = Field(0.8, ge=0, le=1, description="Recognition score a text line needs")
    max_line_height: float = Field(0.25, gt=0, le=1, description="Taller boxes (share of frame height) are textures, not a line of text")
    min_chars: int = Field(2, ge=1, description="Shorter recognised strings are ignored")
    corner_zone: float = Field(
        0.25, ge=0, le=0.5, description="Lines wholly inside a corner this share of the frame are logos, not text"
    )


class BorderConfig(_Cfg):
    enabled: bool = True
    luma_max: float = Field(20.0, ge=0, le=255, description="A row/column is a bar when its 99th-percentile luma is below this in every sample")
    min_bar: float = Field(0.02, ge=0, le=0.5, description="Bars thinner than this share of the side are ignored")


class LogoConfig(_Cfg):
    enabled: bool = True  # reads the text filter's OCR lines (TextConfig: backend, corner_zone)


class StickerConfig(_Cfg):
    enabled: bool = True
    still_tol: float = Field(3.0, ge=0, le=255, description="Luma distance (0-255) to a pixel's temporal median that still counts as unchanged")
    persist: float = Field(0.8, gt=0.5, le=1, description="Share of samples a pixel must be unchanged and on an edge to be a persistent edge (flashes are tolerated)")
    edge_min: float = Field(16.0, gt=0, le=255, description="Gradient (luma per pixel, Sobel / 4) that counts as an edge")
    move_tol: float = Field(6.0, gt=0, le=255, description="Luma change between consecutive samples that counts as motion")
    moving_share: float = Field(0.3, gt=0, le=1, description="Share of sample steps a pixel must change in to be moving")
    ring_moving_min: float = Field(0.7, ge=0, le=1, description="Share of moving pixels needed in the ring around an overlay")
    close: float = Field(0.04, gt=0, le=0.5, description="Closing kernel joining an overlay's edges, share of frame height")
    min_side: float = Field(0.08, gt=0, le=1, description="Smallest overlay side, share of frame height")
    max_side: float = Field(0.45, gt=0, le=2, description="Largest overlay side, share of frame height (larger still areas are the scene)")
    max_aspect: float = Field(2.5, ge=1, description="Longer / shorter box side above which a blob is a line (text), not a sticker")
    corner_zone: float = Field(0.25, ge=0, le=0.5, description="Blobs wholly inside a corner this share of the frame are logos (text.corner_zone)")


class DedupConfig(_Cfg):
    """Copy detection (tasks/curate/filters/dedup.py): frame-signature sets, compared over crops and time."""

    enabled: bool = True
    grid: int = Field(12, ge=4, le=64, description="Side of the grey grid a frame is reduced to for the copy-detection embedding")
    frames: int = Field(24, ge=1, le=64, description="Frame signatures kept per clip (compared as a set: robust to where a re-edit cuts and to fast motion)")
    scales: tuple[float, ...] = Field(
        (1.0, 1.035, 1.07, 1.105), min_length=1, description="Centre crops tried (1 first): a re-edit zoomed in up to the last one is found")
    similarity_min: float = Field(0.85, gt=0, le=1, description="Clip similarity at which two clips are near-duplicates")
    screen_min: float = Field(0.5, ge=-1, le=1, description="Pairs whose mean signatures correlate below this are not compared in full")
    index_device: Literal["cpu", "gpu"] = Field(
        "cpu", description="Where the near-duplicate vector index runs: gpu needs faiss built with CUDA (a GPU profile's choice)")

    @field_validator("scales")
    @classmethod
    def _scale_one_first(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if v[0] != 1.0 or any(s < 1.0 for s in v):
            raise ValueError(f"scales must start at 1.0 (the whole picture) and be >= 1, got {list(v)}")
        return v


class AestheticConfig(_Cfg):
    enabled: bool = True
    backbone_path: str | None = Field(None, description="CLIP vision folder (transformers); None = tiny random, built locally")
    head_path: str | None = Field(None, description="Aesthetic MLP state dict (.pt); None = tiny random")
    frames: int = Field(2, ge=1, le=16)
    cache_dir: str = Field(".reelflow/models", description="Where tiny random weights are built once")


class MotionConfig(_Cfg):
    enabled: bool = True
    pairs: int = Field(8, ge=1, le=64, description="Consecutive-frame pairs whose Farneback flow is measured")


class QualityConfig(_Cfg):
    enabled: bool = True
    frames: int = Field(4, ge=1, le=32, description="Samples the IQA is averaged over")
    vtss_weights_path: str | None = Field(None, description="JSON from fit_vtss; None = the hand-set prior weights")
    niqe_model_path: str | None = Field(
        None, description="NIQE modelparameters.mat (mu_prisparam, cov_prisparam): score_iqa from NIQE; "
        "None = the CPU default, the hand-weighted sharpness/noise/blockiness logistic")
    vqa_checkpoint_path: str | None = Field(
        None, description="FAST-VQA checkpoint in the public layout (models.vqa_fast): score_vqa from it; "
        "None = the CPU default, the hand formula IQA x temporal consistency")
    vtss_checkpoint_path: str | None = Field(
        None, description="Koala-36M Training Suitability Assessment checkpoint (models.vtss_koala): score_vtss "
        "from it (vtss_weights_path is then unused); None = the CPU default, the logistic over filter scores")
    vtss_raw_mean: float = Field(0.0, description="Koala VTSS calibration: score = sigmoid((raw - mean) / std); "
                                 "the mean of raw scores over a reference set of the corpus (0 = uncalibrated)")
    vtss_raw_std: float = Field(1.0, gt=0, description="Koala VTSS calibration: the std of those raw scores")
    checkpoint_clips: int = Field(4, ge=1, le=16, description="Clips the checkpoint models average (public: 4)")
    checkpoint_clip_len: int = Field(32, ge=2, le=64, description="Frames per clip, stride 2 (public: 32)")


class ScoreConfig(_Cfg):
    """Stage ``score``: adds ``score_*`` columns to the clip table; never drops a row."""

    decode: DecodeConfig = DecodeConfig()
    black: BlackConfig = BlackConfig()
    static: StaticConfig = StaticConfig()
    mosaic: MosaicConfig = MosaicConfig()
    text: TextConfig = TextConfig()
    border: BorderConfig = BorderConfig()
    logo: LogoConfig = LogoConfig()
    sticker: StickerConfig = StickerConfig()
    dedup: DedupConfig = DedupConfig()
    aesthetic: AestheticConfig = AestheticConfig()
    motion: MotionConfig = MotionConfig()
    quality: QualityConfig = QualityConfig()
    resources: StageResources = Field(default_factory=StageResources, description="Ray resources per score actor")
