"""Config of the captioner's distillation (report section 3.2, SkyCaptioner-V1)."""

from __future__ import annotations

from pydantic import Field

from infra.config_base import Cfg, StageResources


class CaptionerDistillConfig(Cfg):
    """The captioner fine-tuned on the caption stage's output (captioner + sub-experts + fusion).

    Defaults are the tiny scale's (a random tiny Qwen2.5-VL learns from tens of clips); the GPU profiles set
    the report's recipe: AdamW, lr 1e-5, 2 epochs, global batch 512, on the 7B model."""

    enabled: bool = Field(True, description="false: the stage is skipped")
    holdout: float = Field(0.25, gt=0, lt=1, description="Share of clips held out (by clip id hash) for the measure")
    max_clips: int | None = Field(48, ge=4, description="Clips used at most (train + held out); None = all")
    per_category: int | None = Field(None, ge=1, description="Concept balance: training clips per category at most; "
                                     "None = the mean count per category (rarer categories are all kept)")
    lr: float = Field(3e-3, gt=0)
    epochs: int = Field(12, ge=1)
    batch: int = Field(4, ge=1, description="Examples per optimizer step (gradients accumulated)")
    weight_decay: float = Field(0.0, ge=0)
    field_weight: float = Field(1.0, gt=0, description="Loss weight of the tokens of the fields the experts give "
                                "(shot, camera motion, emotion, category) against the caption's other tokens")
    seed: int = 0
    torch_threads: int | None = Field(None, ge=1, description="Threads while training; None = torch's default")
    # Trained through the training launcher (tasks/train/lib/launch.py) as pretraining is: train.ray_train puts
    # the workers on the Ray cluster with these resources, else they run in the flow's process (one worker) or
    # in local processes (several).
    num_workers: int = Field(1, ge=1, description="Training workers (gradients summed across them over gloo/NCCL)")
    resources: StageResources = Field(default_factory=lambda: StageResources(num_cpus=1, num_gpus=0),
                                      description="What each Ray Train worker reserves: num_cpus, num_gpus, memory_gb")
    checkpoint_every: int = Field(20, ge=1, description="Optimizer steps between step checkpoints (a restarted "
                                  "or rerun stage resumes from the newest)")


# The distillation phase's stages, after the report's main line (``--until`` accepts them).
DISTILL_STAGES = ("captioner-distill",)
