"""Configuration of post-training (report section 3.4): preference pairs, the reward model,
iterative Flow-DPO and the final long video. Diffusion forcing and the 720p SFT are training stages
of ``train.stages`` (phase ``post``): the same trainer with another objective / resolution."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from infra.config_base import Cfg as _Cfg
from infra.config_base import StageResources

Distortion = Literal["v2v", "i2v", "t2v", "frame_rate", "noise", "reverse"]
# Report section 3.4.1: regenerations ordered from mildest to strongest distortion of the real clip.
DISTORTION_LEVEL = {"v2v": 1, "i2v": 2, "t2v": 3, "frame_rate": 1, "noise": 1, "reverse": 2}
MOTION_FAILURES = ("excess motion", "insufficient motion", "subject distortion", "local detail damage",
                   "physics violation", "unnatural motion")


class PairsConfig(_Cfg):
    """Stage ``pairs``: automatic pairs (a real clip beats its distortions) and human-labelled pairs."""

    dataset: str = Field("D_540p_sft", description="Dataset whose clips are the chosen (real) samples")
    resolution: str = Field("540p", description="Key of train.resolutions: the pair videos' 16:9 size")
    frames: int = Field(17, ge=5, description="Pixel frames per pair video (4k+1)")
    max_clips: int = Field(24, ge=1, description="Real clips drawn (seeded) from the dataset")
    distortions: list[Distortion] = Field(default_factory=lambda: ["v2v", "i2v", "t2v", "frame_rate", "noise", "reverse"])
    v2v_strength: float = Field(0.5, gt=0, lt=1, description="Noise level sigma the real latent is inverted to")
    sample_steps: int = Field(4, ge=1, description="Denoising steps of the regenerations")
    noise_std: float = Field(0.08, gt=0, description="Injected pixel noise (fraction of full scale)")
    min_difference: float = Field(0.01, ge=0, description="Pairs whose videos differ less (mean abs, 0-1) are discarded")
    clip_match_min: float | None = Field(None, description="Least CLIP similarity of a clip to its prompt; None = off "
                                         "(tiny: the CLIP backbone is random)")
    clip_model: str | None = Field(None, description="transformers CLIPModel folder (image + text towers) for the "
                                   "clip-prompt match; None = stages.balance.classifier's (tiny: random, built once)")
    human_prompts: int = Field(2, ge=0, description="Prompts whose generated samples humans compare")
    human_samples_per_prompt: int = Field(4, ge=2, description="Report: 4 samples per prompt from the current checkpoint")
    human_tie_margin: float = Field(0.25, ge=0, description="Simulated labels: samples whose distances to real motion "
                                    "statistics (z-units) differ less are a tie")
    guidance_scale: float = Field(5.0, ge=1)
    seed: int = 0
    resources: StageResources = Field(default_factory=StageResources,
                                      description="Ray resources per regeneration actor (a GPU for the sampler)")


class RewardConfig(_Cfg):
    """Stage ``reward``: VLM backbone + scalar head, Bradley-Terry with ties, no prompt context."""

    backbone: str | None = Field(None, description="Qwen2.5-VL folder; None = tiny random one under the state dir")
    steps: int = Field(200, ge=1)
    lr: float = Field(3e-3, gt=0, description="Backbone learning rate (tuned on benchmarks/reward.py's tuning corpus seed)")
    batch_size: int = Field(8, ge=1)
    holdout: float = Field(0.25, gt=0, lt=1, description="Share of source clips held out for evaluation")
    frames: int = Field(8, ge=2, description="Frames of each video the model sees: consecutive pairs (t, t+1) spread "
                        "over the clip, so frame-to-frame defects (a held frame) show")
    pooling: Literal["mean", "mean_max"] = Field("mean_max", description="Head input: mean over all positions, or mean and "
                                                  "max over the video tokens")
    head_lr_scale: float = Field(10.0, gt=0, description="The scalar head's learning rate is lr times this")
    augment: bool = Field(False, description="Random flip and crop per pair, the same for both of its videos")
    tie_margin: float = Field(0.1, ge=0, description="|score_a - score_b| below this is predicted a tie")
    torch_threads: int = Field(1, ge=0, description="CPU threads of the training process; 0 = torch's default "
                               "(one thread: two thrash on a shared 2-core machine)")
    seed: int = 0
    resources: StageResources = Field(default_factory=StageResources, description="What the stage's process needs "
                                      "(it trains in the flow's process: num_gpus > 0 requires CUDA there)")


class DPOConfig(_Cfg):
    """Stages ``dpo-1..N`` (report: 3 rounds; each: sample, rank with the reward model, train, refresh ref)."""

    rounds: int = Field(3, ge=1, le=10)
    prompts: int = Field(4, ge=1, description="Prompts (captions of the SFT dataset) per round")
    samples_per_prompt: int = Field(8, ge=2, description="Report: 8 samples per prompt, best vs worst")
    beta: float = Field(500.0, gt=0, description="Eq. 4's beta (scale of the per-element mean error)")
    steps: int = Field(20, ge=1, description="Optimizer steps per round")
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(2, ge=1, description="Pairs per step")
    resolution: str = "540p"
    frames: int = Field(17, ge=5)
    sample_steps: int = Field(4, ge=1)
    guidance_scale: float = Field(5.0, ge=1)
    checkpoint_every: int = Field(10, ge=1)
    margin_draws: int = Field(4, ge=1, description="(t, noise) draws per pair at which the implicit reward margin "
                              "is measured at the start and the end of a round (the same draws both times)")
    seed: int = 0
    resources: StageResources = Field(default_factory=StageResources, description="What the stage's process needs "
                                      "(sampling and training in the flow's process: num_gpus > 0 requires CUDA there)")


class FinalVideoConfig(_Cfg):
    """The long video the final checkpoint generates at the end of `reelflow run` (diffusion forcing)."""

    prompt: str = "a man walks on a city street at night, slow pan"
    num_frames: int = Field(97, ge=1)
    base_num_frames: int = Field(33, ge=1)
    overlap_history: int = Field(9, ge=1)
    ar_step: int = Field(0, ge=0)
    causal_block_size: int = Field(1, ge=1)
    steps: int = Field(4, ge=1)
    resolution: str = "720p"
    seed: int = 0


class DMDConfig(_Cfg):
    """Stage ``distill-dmd`` (report section 3.5): a few-step generator distilled from the final checkpoint by
    Distribution Matching Distillation (a frozen teacher as the real score, a trained fake score)."""

    enabled: bool = Field(True, description="Run the stage after sft-720p; false skips it")
    generator_steps: int = Field(4, ge=1, description="Report: a 4-step generator")
    generator_shift: float = Field(1.0, gt=0, description="Flow shift of the generator's noise levels; 1: uniform "
                                   "(DMD2's timesteps 999, 749, 499, 249). A large shift leaves its last level noisy")
    iterations: int = Field(10, ge=1, description="Fake-score updates; the generator updates once per "
                            "fake_updates_per_generator of them")
    fake_updates_per_generator: int = Field(5, ge=1, description="Report 3.5: fake/real score networks updated "
                                            "5 times per generator update")
    lr_generator: float = Field(2e-6, gt=0)
    lr_fake: float = Field(2e-6, gt=0)
    regression_weight: float = Field(0.25, ge=0, description="DMD Eq. 10's lambda_reg: weight of the regression of "
                                     "the generator's video onto the teacher's (its ODE solution) from the same "
                                     "noise; 0 = distribution matching alone (DMD2)")
    regression_pairs: int = Field(4, ge=1, description="(noise, teacher video) pairs of the regression, made once")
    guidance_scale: float = Field(5.0, ge=1, description="The teacher's classifier-free guidance in the real "
                                  "score (distilled into the generator, which runs unguided)")
    min_sigma: float = Field(0.02, gt=0, lt=1, description="Noise levels the scores are evaluated at: uniform")
    max_sigma: float = Field(0.98, gt=0, lt=1)
    batch_size: int = Field(2, ge=1)
    prompts: int = Field(4, ge=1, description="Captions of the dataset the generator learns on")
    eval_prompts: int = Field(2, ge=1, description="Held-out captions of the teacher comparison")
    eval_seeds: int = Field(1, ge=1, description="Noise seeds per held-out caption")
    teacher_steps: int = Field(30, ge=1, description="The teacher's steps in the comparison (upstream default)")
    resolution: str = "540p"
    frames: int = Field(17, ge=1, description="Pixel frames (4k+1) of the generated videos")
    checkpoint_every: int = Field(5, ge=1, description="Atomic state checkpoints every N iterations")
    seed: int = 0


class CameraBalanceConfig(_Cfg):
    """The data of stage ``sft-camera`` (report section 5.5, Camera Director): the SFT data balanced over the camera
    expert's labels (6DoF moves and speed classes, models/camera_balance.py) into the view ``D_camera``; the
    training itself is ``train.stages.sft-camera`` (switch both off with its ``enabled``)."""

    source: str = Field("D_720p_sft", description="SFT dataset the balanced subset is chosen from")
    target: dict[str, float] = Field(default_factory=dict, description="Share of each camera class after balancing "
                                     "(e.g. {static: 1, 'yaw+/slow': 2}, normalised); empty = uniform over the classes present")
    keep_fraction: float = Field(0.5, gt=0, le=1, description="Samples after / clips before (report: 1M of the SFT data)")
    max_repeat: int = Field(3, ge=1, le=100, description="Most times a clip of a rare camera class may be repeated")
    seed: int = 0


class PostTrainConfig(_Cfg):
    pairs: PairsConfig = PairsConfig()
    reward: RewardConfig = RewardConfig()
    dpo: DPOConfig = DPOConfig()
    video: FinalVideoConfig = FinalVideoConfig()
    dmd: DMDConfig = DMDConfig()
    camera: CameraBalanceConfig = CameraBalanceConfig()
    human_pairs_mode: Literal["simulated", "interactive", "off"] = Field(
        "simulated", description="How human pairs get labels: the audit page (interactive), a motion-statistics "
        "oracle labelled simulated everywhere (make run), or not at all")
