"""Configuration of the latent cache and the training stages (report sections 3.3, 3.4.3).

Report section 3.3: progressive-resolution pretraining 256p -> 360p -> 540p (images + videos, then
videos only), then a 540p SFT on concept-balanced fps-24 data with the FPS embedding removed. Each
stage starts from the previous stage's checkpoint and trains on its curated dataset. The learning
rates and weight decay are the report's table: 1e-4 -> 5e-5 (decay 1e-4) at 256p, 2e-5 after.

Dual-axis bucketing: a sample's bucket is (latent frames, aspect ratio); its pixel size is the
stage's resolution area re-shaped to that aspect ratio, snapped to multiples of 16 (VAE stride 8 x
patch 2). A bucket's batch size is ``token_budget // tokens(bucket)`` unless pinned.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from infra.config_base import Cfg as _Cfg
from infra.config_base import StageResources

# FPS normalisation (report section 3.3): every clip is resampled to one of these rates; the learnable
# FPS embedding has one row per rate, indexed as diffusers' SkyReels-V2 pipelines index it (16 -> 0, else 1).
FPS_RATES = (16, 24)


# The training stages `--until` accepts, in pipeline order (post-training: section 3.4).
TRAIN_STAGES = ("pretrain-256p", "pretrain-360p", "pretrain-540p", "sft-540p")
POST_STAGES = ("pairs", "reward", "dpo-1", "dpo-2", "dpo-3", "forcing", "sft-720p", "sft-i2v", "sft-camera", "distill-dmd",
               "video")


def fps_index(fps: int) -> int:
    return 0 if fps == 16 else 1


def snap16(x: float) -> int:
    return max(16, int(round(x / 16)) * 16)


class ResolutionConfig(_Cfg):
    """One resolution class ("256p"): its pixel area, aspect ratios and durations (the two bucket axes)."""

    height: int = Field(ge=16, description="Height of the 16:9 bucket; the area every aspect ratio keeps")
    aspect_ratios: list[float] = Field(
        default_factory=lambda: [16 / 9, 4 / 3, 1.0, 9 / 16],
        description="Width / height of the aspect-ratio bins; a clip goes to the nearest (log distance)",
    )
    video_frames: list[int] = Field(
        default_factory=lambda: [17, 33], description="Pixel frame counts of the duration bins (4k+1: Wan VAE)"
    )
    token_budget: int = Field(4096, ge=1, description="DiT tokens per batch; a bucket's batch = budget // its tokens")
    max_batch: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _frames_4k1(self) -> ResolutionConfig:
        bad = [f for f in self.video_frames if f < 1 or (f - 1) % 4]
        if bad:
            raise ValueError(f"video_frames must be 4k+1 (the Wan VAE's temporal stride), got {bad}")
        return self

    def size(self, aspect_ratio: float) -> tuple[int, int]:
        """(height, width) of the bucket with this aspect ratio: the 16:9 area kept, snapped to 16."""
        area = self.height * self.height * 16 / 9
        return snap16(math.sqrt(area / aspect_ratio)), snap16(math.sqrt(area * aspect_ratio))


class LatentsConfig(_Cfg):
    """The latent cache stage: VAE latents + umT5 embeddings per clip and resolution bucket."""

    cache_dir: str | None = Field(
        None, description="Where cached shards live, shared by runs; None = {run_root}/../latent-cache"
    )
    shard_samples: int = Field(64, ge=1, description="Samples per shard file")
    text_len: int = Field(512, ge=8, description="umT5 tokens kept per caption (diffusers pads prompts to 512)")
    batch_size: int = Field(4, ge=1, description="Clips decoded and encoded together by an encoder actor "
                            "(same-bucket videos share one VAE call, captions one umT5 call)")
    resources: StageResources = Field(default_factory=lambda: StageResources(actors=1), description="Ray resources "
                                      "per encoder actor (actors: pool size); num_gpus > 0 runs the encoders on CUDA")
    torch_threads: int = Field(1, ge=1, description="Torch CPU threads per actor (actors are the parallelism)")
    text_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="umT5 weights' dtype (bf16 halves GPU memory); the VAE always runs in fp32"
    )
    images_per_video: int = Field(1, ge=0, description="Still frames drawn per clip for image+video stages")


class TrainStageConfig(_Cfg):
    dataset: str = Field(description="Curated dataset the stage trains on (D_256p, D_360p, D_540p, D_540p_sft)")
    resolution: str = Field(description="Key of train.resolutions")
    phase: Literal["pretrain", "post"] = Field("pretrain", description="Which flow runs it (post: after Flow-DPO)")
    init_from: str | None = Field(None, description="Stage whose checkpoint starts this one; None = base checkpoint")
    objective: Literal["flow_matching", "diffusion_forcing", "first_frame"] = Field(
        "flow_matching", description="diffusion_forcing: per-frame noise levels from FoPP (report section 3.4.2); "
        "first_frame: the T2V DiT widened into diffusers' I2V transformer, conditioned on the first frame (5.5)")
    enabled: bool = Field(True, description="false skips the stage (post-training extras: sft-i2v, sft-camera)")
    model: Literal["dit", "camera"] = Field("dit", description="Registered model the checkpoint is a version of: the "
                                            "main line (dit) or Camera Director, a model of its own (report 5.5); "
                                            "objective first_frame registers the i2v model")
    causal_block_size: int | None = Field(None, ge=1, description="Block-causal attention while training "
                                          "(diffusion forcing; latent frames per block); None = full attention")
    media: Literal["images+videos", "videos"] = "videos"
    fps_only: int | None = Field(None, description="Train only on clips normalised to this rate (SFT: 24)")
    fps_embedding: bool = Field(True, description="False drops the learnable FPS embedding (report: removed at SFT)")
    steps: int = Field(ge=1)
    lr: float = Field(gt=0)
    lr_end: float | None = Field(None, gt=0, description="Linear decay to this lr over the stage; None = constant")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of the weights, saved as the checkpoint")
    checkpoint_every: int = Field(10, ge=1, description="Atomic step checkpoints every N steps")
    sample_every: int = Field(0, ge=0, description="Sample videos every N steps (0 = only at the end)")
    seed: int = 0

    @model_validator(mode="after")
    def _forcing_without_fps(self) -> TrainStageConfig:
        # Report section 3.4: diffusion forcing follows the SFT that removed the FPS embedding; diffusers'
        # DF forward also tiles the FPS embedding frame-major against batch-major timesteps when B > 1.
        if self.objective == "diffusion_forcing" and self.fps_embedding:
            raise ValueError("objective diffusion_forcing needs fps_embedding: false (the FPS embedding is "
                             "removed at the 540p SFT, before diffusion forcing)")
        if self.objective == "first_frame" and (self.fps_embedding or self.causal_block_size):
            # diffusers' I2V pipeline passes no fps and runs full attention (the full-sequence T2V model, 5.5).
            raise ValueError("objective first_frame needs fps_embedding: false and no causal_block_size (the I2V "
                             "model is the full-sequence T2V model, sft-540p, fine-tuned)")
        return self


class SampleConfig(_Cfg):
    """Fixed prompts and seed for the sample videos logged during training."""

    prompts: list[str] = Field(default_factory=lambda: ["a man walks on a city street at night, slow pan"])
    seed: int = 0
    steps: int = Field(4, ge=1)
    frames: int = Field(9, ge=1)
    guidance_scale: float = Field(5.0, ge=1)


class TrainConfig(_Cfg):
    base_checkpoint: str | None = Field(
        None, description="Diffusers folder (Wan2.1 / SkyReels-V2) the first stage starts from; None = build a "
        "random one of init_profile under the state dir"
    )
    init_profile: Literal["tiny", "wan-1.3b"] = "tiny"
    image_encoder: str | None = Field(
        None, description="Folder with image_encoder/ (CLIPVisionModelWithProjection) and image_processor/ for the "
        "I2V stage (objective first_frame; SkyReels-V2-I2V uses CLIP ViT-H/14); None = a random one of init_profile")
    engine: Literal["plain", "deepspeed"] = "plain"
    zero_stage: Literal[0, 1, 2, 3] = 2
    num_workers: int = Field(1, ge=1, description="Training processes (Ray Train workers)")
    ray_train: bool = Field(False, description="Launch the workers through Ray Train (cluster); else in-process")
    resources: StageResources = Field(default_factory=StageResources, description="What each Ray Train worker "
                                      "reserves: num_cpus (None = 1), num_gpus (None = one when the cluster advertises "
                                      "GPUs, decided from the cluster, never the driver's hardware), memory_gb, custom")
    dist_backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto", description="torch.distributed backend of Ray Train workers; auto = nccl with GPUs, else gloo "
        "(gloo when a cluster's GPU resource is only scheduled, as on cluster-local)")
    max_failures: int = Field(0, ge=-1, description="Ray Train worker-group restarts after a worker or node dies "
                              "(-1 = unlimited); each restart resumes from the last step checkpoint")
    sequence_parallel: int = Field(1, ge=1, description="Ulysses sequence-parallel degree (deepspeed.sequence)")
    gradient_checkpointing: bool = False
    mixed_precision: Literal["no", "bf16"] = "no"
    logit_normal_mean: float = 0.0
    logit_normal_std: float = Field(1.0, gt=0)
    keep_step_checkpoints: int = Field(2, ge=1)
    latents: LatentsConfig = LatentsConfig()
    sample: SampleConfig = SampleConfig()
    resolutions: dict[str, ResolutionConfig] = Field(default_factory=dict)
    stages: dict[str, TrainStageConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references_exist(self) -> TrainConfig:
        for name, stage in self.stages.items():
            if stage.resolution not in self.resolutions:
                raise ValueError(f"stages.{name}.resolution {stage.resolution!r} is not one of "
                                 f"{sorted(self.resolutions)}")
            allowed = set(self.stages) | {s for s in POST_STAGES if s.startswith("dpo-")}
            if stage.init_from is not None and stage.init_from not in allowed:
                raise ValueError(f"stages.{name}.init_from {stage.init_from!r} is not one of {sorted(allowed)}")
        return self
