"""Ground-truth sidecar of a synthetic film (`<video>.truth.json` beside `<video>.mp4`).

Frame indices are 0-based decoded-frame indices; ranges are half-open ``[start, end)``.
Every later stage measures itself against these records (shot boundaries, camera motion,
categories, planted defects), so the schema is the contract between the corpus and the tests.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Axis = Literal["+", "-", "0"]
Speed = Literal["static", "slow", "medium", "fast"]
Category = Literal["human", "animal", "vehicle", "scenery", "architecture", "object"]
TransitionKind = Literal["cut", "dissolve", "fade"]
DefectKind = Literal[
    "black",  # fully black frames inside a shot (same content before and after)
    "frozen",  # repeated identical frame inside a shot
    "subtitle",  # burned-in subtitle line (real words), bottom of frame
    "caption_text",  # burned-in caption/title text elsewhere in frame
    "mosaic",  # pixelated rectangle
    "letterbox",  # black bars top and bottom
    "pillarbox",  # black bars left and right
    "logo",  # persistent corner logo
    "sticker",  # overlay on moving content
    "blur",
    "noise",
    "blocking",  # compression-like 8x8 blocking
]
HardNegativeKind = Literal["fast_pan", "flash", "crossing_object"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class CameraMotion(BaseModel):
    """Report section 3.2 camera-motion label: each 6DoF axis +/-/0, plus a speed class.

    Translation x = right, y = down (image axes), z = forward (dolly in). Rotation roll about the
    optical axis (clockwise +), pitch (tilt down +), yaw (pan right +). Speed is the per-second
    image-plane displacement of the scene relative to the frame diagonal: slow < 5%,
    medium 5-20%, fast > 20%.
    """

    model_config = _STRICT
    tx: Axis = "0"
    ty: Axis = "0"
    tz: Axis = "0"
    roll: Axis = "0"
    pitch: Axis = "0"
    yaw: Axis = "0"
    speed: Speed = "static"
    speed_fraction_per_s: float = 0.0  # the measured quantity behind `speed`


class Subject(BaseModel):
    model_config = _STRICT
    category: Category
    name: str  # e.g. "woman", "dog", "car": a noun for captions
    is_main: bool = False


class Shot(BaseModel):
    model_config = _STRICT
    index: int
    start_frame: int
    end_frame: int  # exclusive; transition frames belong to neither adjacent shot's clean range
    camera: CameraMotion
    subjects: list[Subject]
    category: Category  # main subject's category (concept balancing truth)
    duplicate_of: str | None = None  # "video_id:shot_index" this shot nearly duplicates


class Transition(BaseModel):
    """A shot boundary. For a cut, ``start_frame`` is the first frame of the new shot and
    ``end_frame == start_frame``; for gradual kinds ``[start_frame, end_frame)`` are the mixed frames."""

    model_config = _STRICT
    kind: TransitionKind
    start_frame: int
    end_frame: int

    @property
    def is_gradual(self) -> bool:
        return self.kind != "cut"


class Defect(BaseModel):
    """A planted defect. Footage defects (mosaic, sticker, blur, noise, blocking, a per-shot logo)
    cover their shot's clean range and also show, blended, in its gradual-transition frames."""

    model_config = _STRICT
    kind: DefectKind
    start_frame: int
    end_frame: int
    # x, y, w, h where spatial; for letterbox / pillarbox the picture area left between the bars
    box: tuple[int, int, int, int] | None = None
    text: str | None = None  # the burned-in words for subtitle / caption_text / logo


class HardNegative(BaseModel):
    """Content that fools naive shot detectors but is NOT a boundary."""

    model_config = _STRICT
    kind: HardNegativeKind
    start_frame: int
    end_frame: int


class VideoTruth(BaseModel):
    model_config = _STRICT
    video_id: str
    seed: int
    fps: float
    width: int
    height: int
    num_frames: int
    shots: list[Shot]
    transitions: list[Transition] = Field(default_factory=list)
    defects: list[Defect] = Field(default_factory=list)
    hard_negatives: list[HardNegative] = Field(default_factory=list)


def truth_path(mp4_path: str) -> str:
    """``film_0000.mp4`` -> ``film_0000.truth.json`` (the sidecar beside the video)."""
    return os.path.splitext(mp4_path)[0] + ".truth.json"


def load_truth(mp4_path: str) -> VideoTruth:
    with open(truth_path(mp4_path), encoding="utf-8") as f:
        return VideoTruth.model_validate_json(f.read())


def save_truth(truth: VideoTruth, mp4_path: str) -> str:
    """Write the sidecar atomically (temporary file, then one rename)."""
    path = truth_path(mp4_path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(truth.model_dump_json(indent=1))
    os.replace(tmp, path)
    return path
