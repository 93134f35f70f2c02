"""Structured caption schema (report section 3.2, Figure 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from models.caption_schema import CameraMotion, StructuredCaption, caption_json_schema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "configs" / "caption_schema.json"

EXAMPLE = {
    "subjects": [{"TYPES": {"type": "human", "sub_type": "woman"}, "appearance": "red coat",
                  "action": "walks left", "expression": {"emotion": "happy", "intensity": "moderate", "change": "steady"},
                  "position": "centre", "is_main_subject": True}],
    "shot_type": "medium", "shot_angle": "eye level", "shot_position": "front",
    "camera_motion": {"yaw": "+", "speed": "slow"}, "environment": "a city street", "lighting": "overcast",
}


def test_example_validates_and_exposes_category():
    caption = StructuredCaption.model_validate(EXAMPLE)
    assert caption.category == "human"
    assert caption.camera_motion.describe() == "slow pan right"


@pytest.mark.parametrize("patch", [{"shot_type": "wide-ish"}, {"subjects": []}, {"lighting": "x" * 500},
                                   {"camera_motion": {"yaw": "left"}}, {"extra": 1}])
def test_invalid_captions_are_rejected(patch):
    with pytest.raises(ValidationError):
        StructuredCaption.model_validate({**EXAMPLE, **patch})


def test_exported_schema_file_is_current():
    assert json.loads(SCHEMA_FILE.read_text()) == json.loads(json.dumps(caption_json_schema()))


def test_camera_motion_text():
    assert CameraMotion().describe() == "static camera"
    assert CameraMotion(tx="-", tz="+", speed="fast", handheld=True).describe() == "fast truck left and dolly in, handheld"
