"""The caption stage's per-clip views and the sub-experts' overrides (report section 3.2): one decode gives the
captioner's 2-fps RGB samples and every frame in grey (the camera-motion estimator needs every frame); the
sub-experts then overwrite their fields of the captioner's structured caption."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.video import iter_frames
from models.camera_motion import to_gray
from models.caption_schema import CameraMotion, Expression, StructuredCaption
from models.captioner import sample_indices


@dataclass
class ClipViews:
    fps: float
    samples: np.ndarray  # (S, H, W, 3) uint8 RGB at sample_fps
    greys: list[np.ndarray]  # every frame, grey, at most 480 wide (the motion estimator's input)

def decode_views(path: str, num_frames: int, fps: float, sample_fps: float, max_frames: int) -> ClipViews:
    wanted = set(sample_indices(num_frames, fps, sample_fps, max_frames).tolist())
    samples, greys = [], []
    for i, frame in iter_frames(path):
        greys.append(to_gray(frame))
        if i in wanted:
            samples.append(frame)
    if len(greys) < 2 or not samples:
        raise ValueError(f"only {len(greys)} frames decoded")
    if len(samples) == 1:
        samples.append(samples[0])
    return ClipViews(fps, np.stack(samples), greys)

def apply_experts(caption: StructuredCaption, shot: dict | None, motion: dict | None,
                  expression: Expression | None) -> StructuredCaption:
    """Sub-experts overwrite their fields (report section 3.2, step 2). Expressions belong to faces:
    non-human subjects lose theirs; the main human subject takes the expert's when a face was found."""
    data = caption.model_dump()
    data.update(shot or {})
    if motion is not None:
        data["camera_motion"] = CameraMotion(**motion).model_dump()
    main = caption.subjects.index(caption.main_subject())
    for i, subject in enumerate(data["subjects"]):
        if subject["TYPES"]["type"] != "human":
            subject["expression"] = None
        elif i == main and expression is not None:
            subject["expression"] = expression.model_dump()
    return StructuredCaption.model_validate(data)

def sample_rate(views: ClipViews) -> float:
    """Frames per second of the samples actually taken (long clips are strided below sample_fps)."""
    duration = len(views.greys) / views.fps
    return max(len(views.samples) / max(duration, 1e-6), 1e-3)

