"""Stage ``video``: the long video the final checkpoint generates (report section 3.4.2's infinite-length
generation), diffusion forcing with the AD schedule, through reelflow's own sampler (``tasks.generate.lib.generator``).
The stage's table is one row (the settings and timings), the mp4 sits beside it and in MLflow."""

from __future__ import annotations

import os

import pyarrow as pa

from infra import storage
from infra.checkpoints import checkpoint_dir
from infra.config_post import FinalVideoConfig
from infra.config_train import TrainConfig
from infra.manifest import Manifest
from infra.stage import StageContext, StageWork, run_stage
from models.checkpoint import is_diffusion_forcing
from models.generate_config import GenerateConfig
from tasks.generate.lib.generator import generate_video

VIDEO = "video.mp4"


def generate_config(cfg: FinalVideoConfig, train: TrainConfig) -> GenerateConfig:
    height, width = train.resolutions[cfg.resolution].size(16 / 9)
    return GenerateConfig(prompt=cfg.prompt, num_frames=cfg.num_frames, height=height, width=width,
                          num_inference_steps=cfg.steps, seed=cfg.seed, ar_step=cfg.ar_step,
                          causal_block_size=cfg.causal_block_size, base_num_frames=cfg.base_num_frames,
                          overlap_history=cfg.overlap_history, guidance_scale=5.0)


def run(ctx: StageContext, cfg: FinalVideoConfig, train: TrainConfig, checkpoint: Manifest) -> Manifest:
    folder = checkpoint_dir(checkpoint)
    local = storage.fetch_folder(folder)  # under an S3 run root: a node-local copy
    if not is_diffusion_forcing(local):
        raise ValueError(f"{folder} is not a diffusion-forcing checkpoint; the long video needs the `forcing` stage")
    gen = generate_config(cfg, train)

    def body(work: StageWork) -> pa.Table:
        out = os.path.join(work.scratch_dir, VIDEO)  # artifacts are logged after the publish rename
        facts = generate_video(local, gen, out, progress=True)
        storage.upload(out, storage.join(work.tmp_uri, VIDEO))
        work.artifacts.append(out)
        work.metrics.update({"frames": facts["frames"], "generation_seconds": facts["seconds"],
                             "seconds_per_video_second": facts["seconds_per_video_second"]})
        work.stats.update({"video": storage.join(work.final_uri, VIDEO), "checkpoint": folder})
        row = {"prompt": gen.prompt, "frames": facts["frames"], "height": gen.height, "width": gen.width,
               "seconds": facts["seconds"], "video_uri": storage.join(work.final_uri, VIDEO), "checkpoint": folder}
        return pa.Table.from_pylist([row])

    return run_stage(ctx, "video", cfg, [checkpoint], body)
