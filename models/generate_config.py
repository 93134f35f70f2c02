"""Settings of one diffusion-forcing generation (upstream README "Diffusion Forcing Additional Parameters")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

VAE_TEMPORAL_STRIDE = 4  # Wan2.1 VAE: 1 + 4k pixel frames -> 1 + k latent frames
SPATIAL_MULTIPLE = 16  # VAE stride 8 x DiT patch 2


def latent_frames(pixel_frames: int) -> int:
    return (pixel_frames - 1) // VAE_TEMPORAL_STRIDE + 1


class GenerateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    prompt: str = Field("", description="what to generate; story mode takes `story` instead")
    story: list[str] = Field(default_factory=list, description="story mode (report section 5.5): one prompt "
                             "per window of a long video, in order; the last one holds for any later windows")
    negative_prompt: str = ""
    num_frames: int = Field(97, ge=1, description="pixel frames of the whole video, 1 + 4k")
    height: int = Field(544, ge=16)
    width: int = Field(960, ge=16)
    num_inference_steps: int = Field(30, ge=1)
    guidance_scale: float = Field(6.0, ge=0, description="classifier-free guidance; <= 1 disables it")
    flow_shift: float | None = Field(None, gt=0, description="None keeps the checkpoint scheduler's shift")
    seed: int = 0
    fps: int = Field(24, ge=1, description="frame-rate condition of fps-aware DiTs (16 or other)")
    max_sequence_length: int = Field(512, ge=1)
    # Diffusion forcing (report section 3.4.2, 5.4)
    ar_step: int = Field(0, ge=0, description="0 = synchronous; >0 = rows a block lags the previous one")
    causal_block_size: int | None = Field(None, ge=1, description="latent frames per causal block; None = "
                                          "the checkpoint's num_frame_per_block; 1 = full attention")
    base_num_frames: int = Field(97, ge=1, description="pixel frames the DiT sees per window")
    overlap_history: int | None = Field(None, ge=1, description="pixel frames re-read from the last window")
    addnoise_condition: float = Field(0.0, ge=0, description="noise level on history conditions (~20)")
    # Speed-ups beyond the reference sampler; exact up to float rounding.
    skip_unstarted_blocks: bool = Field(True, description="under block-causal attention, do not run blocks "
                                        "that have not started: no earlier block attends to them")
    batch_guidance: bool = Field(True, description="run the conditional and unconditional passes of "
                                 "classifier-free guidance as one batch of two")
    kv_cache: bool = Field(True, description="under block-causal attention, compute finished blocks' keys/"
                           "values once; exact only while history is not re-noised each row, so it is off "
                           "for windows with history when addnoise_condition > 0")
    prune_rows: bool = Field(True, description="run each DiT pass through models/df_dit.py: prompt keys/values "
                             "once per generation, the guidance branches' shared first layers once, the last "
                             "layer on the frames a row updates only; exact. Off, or with TeaCache, every pass "
                             "is the diffusers forward")
    # TeaCache (Liu et al. 2024, arXiv 2411.19108): lossy, reported separately; off by default.
    teacache: bool = Field(False, description="skip the DiT's transformer blocks on steps whose timestep-"
                           "modulated input changed little since the last computed step, reusing that step's "
                           "block residual (models/teacache.py); approximate, so off by default")
    teacache_threshold: float = Field(0.1, ge=0, description="TeaCache: skip while the accumulated relative L1 "
                                      "change of the first block's modulated input stays below this; 0 computes "
                                      "every step, larger skips more")
    teacache_retention_steps: int = Field(1, ge=0, description="TeaCache: a frame's first steps always run the "
                                          "blocks (its last step does too)")

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if not self.prompt and not self.story:
            raise ValueError("give a prompt, or story prompts (one per window) for story mode")
        if self.overlap_history is not None and self.overlap_history % VAE_TEMPORAL_STRIDE != 1:
            lower = self.overlap_history - (self.overlap_history - 1) % VAE_TEMPORAL_STRIDE
            raise ValueError(f"overlap_history must be 1 + {VAE_TEMPORAL_STRIDE}k so the history maps to whole "
                             f"latent frames; use {max(lower, 1)} or {lower + VAE_TEMPORAL_STRIDE}, "
                             f"not {self.overlap_history}")
        for name in ("num_frames", "base_num_frames"):
            value = getattr(self, name)
            if value % VAE_TEMPORAL_STRIDE != 1:
                lower = value - (value - 1) % VAE_TEMPORAL_STRIDE
                raise ValueError(f"{name} must be 1 + {VAE_TEMPORAL_STRIDE}k for the VAE; use {lower} or "
                                 f"{lower + VAE_TEMPORAL_STRIDE}, not {value}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value % SPATIAL_MULTIPLE:
                raise ValueError(f"{name} must be a multiple of {SPATIAL_MULTIPLE}, got {value}")
        if self.num_frames > self.base_num_frames:
            if self.overlap_history is None:
                raise ValueError("overlap_history is required when num_frames exceeds base_num_frames "
                                 "(the upstream README recommends 17 or 37)")
            if latent_frames(self.overlap_history) >= latent_frames(self.base_num_frames):
                raise ValueError("overlap_history must be shorter than base_num_frames")
        block = self.causal_block_size or 1
        if self.overlap_history is not None and latent_frames(self.overlap_history) < block:
            raise ValueError(f"overlap_history={self.overlap_history} is {latent_frames(self.overlap_history)} "
                             f"latent frames, less than one causal block of {block}: no whole block of history "
                             f"would condition the next window; use overlap_history >= "
                             f"{1 + VAE_TEMPORAL_STRIDE * (block - 1)} or a smaller causal_block_size")
        return self

    @property
    def is_long_video(self) -> bool:
        return self.overlap_history is not None and self.num_frames > self.base_num_frames

    def output_frames(self, video_frames: int = 0) -> int:
        """Frames of the output: the generated ones, after the `video_frames` of a video being extended (its
        re-read overlap counts in num_frames once)."""
        return video_frames + self.num_frames - self.overlap_history if video_frames else self.num_frames

    def window_prompts(self, num_windows: int) -> list[str]:
        """The prompt of each window: the story's, in order, or the one prompt throughout."""
        if not self.story:
            return [self.prompt] * num_windows
        if len(self.story) > num_windows:
            raise ValueError(f"the story has {len(self.story)} prompts but these settings make {num_windows} "
                             f"window(s); raise num_frames to at least {self.frames_for_windows(len(self.story))} "
                             "or give fewer prompts")
        return self.story + [self.story[-1]] * (num_windows - len(self.story))

    def frames_for_windows(self, num_windows: int) -> int:
        """The smallest num_frames that makes `num_windows` windows (window 0 whole, then one frame each)."""
        base = latent_frames(self.base_num_frames)
        if num_windows <= 1:
            return 1
        if self.overlap_history is None:
            raise ValueError("story mode with more than one prompt needs overlap_history (17 or 37 recommended)")
        stride = base - latent_frames(self.overlap_history)
        return (base + (num_windows - 2) * stride) * VAE_TEMPORAL_STRIDE + 1
