"""Post-training phase (report section 3.4), as the report's pseudocode reads:

    pairs  = PreferencePairs(D_540p_sft, sft-540p)          # real beats distorted; humans label samples
    R      = RewardModel.fit(pairs, loss=BTT)               # Bradley-Terry with ties, no prompt context
    for k in 1..3:                                          # iterative Flow-DPO (Eq. 4)
        ckpt = FlowDPO(ckpt, ref=ckpt, pairs=best_vs_worst(sample(ckpt, 8 per prompt), R))
    ckpt = DiffusionForcing(ckpt, schedule=FoPP)            # per-frame non-decreasing noise
    ckpt = SFT(ckpt, D_720p_sft)                            # 720p
    i2v = SFT(widen_i2v(sft-540p), D_540p_sft, first frame)  # image-to-video (5.5), a model of its own
    cam = SFT(ckpt, CameraBalance(D_720p_sft))              # Camera Director (5.5), a model of its own
    fast = DMD(ckpt, steps=4, fake:generator updates 5:1)   # few-step generator (3.5), a model of its own
    video = generate(ckpt, long=True)                       # diffusion-forcing long video
"""

from __future__ import annotations

from prefect import flow

from flows.pretrain import train_stage
from flows.stages import Stages, UntilReached, stage_task
from flows.summary import attach_prefect_logs, reported
from infra.config import ConfigError, PipelineConfig
from infra.manifest import Manifest
from infra.session import open_run
from tasks.generate import video
from tasks.post import distill_dmd, dpo, pairs, reward, sft_camera

pairs_task = stage_task(pairs.run, "pairs")
reward_task = stage_task(reward.run, "reward")
dpo_task = stage_task(dpo.run, "dpo", "dpo-{round}")
video_task = stage_task(video.run, "video")
dmd_task = stage_task(distill_dmd.run, "distill-dmd")
camera_data_task = stage_task(sft_camera.run, sft_camera.NAME)


def extra_enabled(cfg: PipelineConfig, name: str) -> bool:
    """Whether the post-training extra ``name`` (a train.stages entry) runs: present and enabled."""
    return name in cfg.train.stages and cfg.train.stages[name].enabled


def camera_stage(ctx, cfg: PipelineConfig, datasets: dict[str, Manifest], checkpoints: dict[str, Manifest]) -> Manifest:
    """Stage ``sft-camera``: the camera-balanced view of the SFT data, then SFT on it from its init_from checkpoint."""
    stage = cfg.train.stages["sft-camera"]
    if stage.dataset != sft_camera.NAME:
        raise ConfigError(f"train.stages.sft-camera.dataset must be {sft_camera.NAME} (the camera-balanced view "
                          f"of post.camera.source), got {stage.dataset!r}")
    view = camera_data_task(ctx, cfg.post.camera, datasets[cfg.post.camera.source])
    return train_stage(ctx, cfg, {**datasets, sft_camera.NAME: view}, "sft-camera", checkpoints)


@flow(name="post-train", flow_run_name="post-train-{run_id}")
def post_train_flow(cfg: PipelineConfig, run_id: str, datasets: dict[str, Manifest], sft: Manifest,
                    until: str | None = None) -> Manifest:
    """The video's manifest; after the ``--until`` stage, that stage's."""
    attach_prefect_logs()
    ctx = open_run(cfg, run_id)
    stages, post = Stages("post-train", until), cfg.post
    dataset = datasets[post.pairs.dataset]
    if until == "distill-dmd" and not post.dmd.enabled:
        raise ValueError("--until distill-dmd: the stage is switched off (post.dmd.enabled=false); "
                         "set it to true or stop earlier")
    if until in ("sft-i2v", "sft-camera") and not extra_enabled(cfg, until):
        raise ValueError(f"--until {until}: the stage is switched off (train.stages.{until}.enabled=false or "
                         "absent); set it to true or stop earlier")
    with reported(ctx, "post-train"):
        try:
            preference = stages.run("pairs", pairs_task, ctx, post.pairs, cfg.audit, dataset, sft)
            reward_model = stages.run("reward", reward_task, ctx, post.reward, preference)
            current = sft
            for k in range(1, post.dpo.rounds + 1):
                current = stages.run(f"dpo-{k}", dpo_task, ctx, post.dpo, k, current, reward_model, dataset)
            for name in ("forcing", "sft-720p"):  # each from its init_from checkpoint (cfg.train.stages)
                current = stages.run(name, train_stage, ctx, cfg, datasets, name, stages.done)
            # Two models of their own beside the final checkpoint, which DMD and the video still use.
            if extra_enabled(cfg, "sft-i2v"):
                stages.run("sft-i2v", train_stage, ctx, cfg, datasets, "sft-i2v", {"sft-540p": sft, **stages.done})
            if extra_enabled(cfg, "sft-camera"):
                stages.run("sft-camera", camera_stage, ctx, cfg, datasets, {"sft-540p": sft, **stages.done})
            if post.dmd.enabled:  # a few-step generator beside the final checkpoint, which the video still uses
                stages.run("distill-dmd", dmd_task, ctx, post.dmd, cfg.train, current, dataset)
            return stages.run("video", video_task, ctx, post.video, cfg.train, current)
        except UntilReached as reached:
            return reached.manifest
