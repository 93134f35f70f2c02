"""The structured caption of a clip (report section 3.2, Figure 6), as pydantic models.

SkyCaptioner-V1 emits one JSON object per clip: a ``subjects`` array (each with ``TYPES``,
appearance, action, expression, position, ``is_main_subject``) and the shot metadata (shot type,
angle, position, camera motion, environment, lighting). Sub-expert captioners then overwrite
their fields (shot heads, expression, camera motion), and fusion turns it into T2V / I2V prompts.

Every free-text field has a length bound and every list a size bound: the JSON Schema exported
from these models drives constrained decoding (xgrammar on CPU, vLLM guided decoding on GPU), so
the bounds are what guarantees that even a randomly initialised model finishes a valid caption.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Same vocabulary as the corpus truth (tasks/corpus/lib/truth.py) and concept balancing.
Category = Literal["human", "animal", "vehicle", "scenery", "architecture", "object"]
# Report section 3.2, Shot Captioner classes.
ShotType = Literal["extreme close-up", "close-up", "medium", "full", "long"]
ShotAngle = Literal["eye level", "high", "low"]
ShotPosition = Literal["front", "side", "back", "three-quarter", "overhead"]
# Report section 3.2, Expression Captioner: seven emotion labels (the FER-2013 set) + intensity.
Emotion = Literal["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
Intensity = Literal["slight", "moderate", "strong"]
# Report section 3.2, Camera Motion Captioner: 6DoF, each axis +/-/0, three speeds (+ static).
Axis = Literal["+", "-", "0"]
Speed = Literal["static", "slow", "medium", "fast"]

TEXT_SHORT, TEXT_LONG = 40, 120  # characters; bounds generation length
MAX_SUBJECTS = 3

_STRICT = ConfigDict(extra="forbid")


class SubjectType(BaseModel):
    model_config = _STRICT
    type: Category
    sub_type: str = Field(max_length=TEXT_SHORT, description="A noun: woman, dog, car, mountain ...")


class Expression(BaseModel):
    """Facial expression over the clip: the dominant emotion, how strong, how it changed."""

    model_config = _STRICT
    emotion: Emotion
    intensity: Intensity
    change: str = Field(max_length=TEXT_SHORT, description="Temporal change, e.g. 'neutral to happy' or 'steady'")


class Subject(BaseModel):
    model_config = _STRICT
    TYPES: SubjectType
    appearance: str = Field(max_length=TEXT_LONG)
    action: str = Field(max_length=TEXT_LONG)
    expression: Expression | None = Field(None, description="Only for subjects with a visible face")
    position: str = Field(max_length=TEXT_SHORT, description="Where in the frame: left, centre, foreground ...")
    is_main_subject: bool


class CameraMotion(BaseModel):
    """6DoF label. Translation x = right, y = down, z = forward (dolly in); roll clockwise +,
    pitch tilt-down +, yaw pan-right +. Speed unit: mean image-plane displacement of the static
    scene per second as a fraction of the frame diagonal; slow < 0.05 <= medium <= 0.20 < fast."""

    model_config = _STRICT
    tx: Axis = "0"
    ty: Axis = "0"
    tz: Axis = "0"
    roll: Axis = "0"
    pitch: Axis = "0"
    yaw: Axis = "0"
    speed: Speed = "static"
    handheld: bool = Field(False, description="High-frequency shake on top of the intended path")
    abrupt_change: bool = Field(False, description="Direction or speed changes suddenly within the clip")

    def describe(self) -> str:
        """Film language for the label, e.g. 'slow pan right and dolly in, handheld'."""
        words = {
            "tx": ("truck right", "truck left"), "ty": ("pedestal down", "pedestal up"),
            "tz": ("dolly in", "dolly out"), "roll": ("roll clockwise", "roll counter-clockwise"),
            "pitch": ("tilt down", "tilt up"), "yaw": ("pan right", "pan left"),
        }
        moves = [words[a][0 if v == "+" else 1] for a, v in self.model_dump().items() if a in words and v != "0"]
        text = "static camera" if not moves else f"{self.speed} {' and '.join(moves)}"
        flags = [f for f, on in (("handheld", self.handheld), ("abrupt change", self.abrupt_change)) if on]
        return ", ".join([text, *flags])


class StructuredCaption(BaseModel):
    """One clip's caption (report Figure 6). Stored as the clip table's ``caption_json``."""

    model_config = _STRICT
    subjects: list[Subject] = Field(min_length=1, max_length=MAX_SUBJECTS)
    shot_type: ShotType
    shot_angle: ShotAngle
    shot_position: ShotPosition
    camera_motion: CameraMotion
    environment: str = Field(max_length=TEXT_LONG)
    lighting: str = Field(max_length=TEXT_SHORT)

    def main_subject(self) -> Subject:
        return next((s for s in self.subjects if s.is_main_subject), self.subjects[0])

    @property
    def category(self) -> str:
        """Concept-balancing category: the main subject's type."""
        return self.main_subject().TYPES.type


def caption_json_schema() -> dict:
    """The JSON Schema that constrained decoding enforces (and that vLLM guided decoding takes)."""
    return StructuredCaption.model_json_schema()


def export_schema(path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(caption_json_schema(), f, indent=1, sort_keys=True)
        f.write("\n")
    return path
