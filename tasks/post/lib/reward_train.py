"""Reward-model training (report section 3.4.1) as a launcher worker, like pretraining's ``train_worker``.

``reward_train_worker(job)`` takes a plain dict, so ``tasks.train.lib.launch`` runs it in-process, in spawned
processes or on Ray Train workers of a cluster. Each worker builds the initial model from the backbone folder
(a local path or a run-root URI any node can read), decodes the videos of its own share of each batch
(``reward_fit.train``: gradients averaged over the ranks, so N workers take one process's steps) and rank 0
writes the trained model folder; the driver scores and evaluates it.
"""

from __future__ import annotations

import os
import tempfile

import pandas as pd
import torch
import torch.distributed as dist

from infra import storage
from infra.config_post import RewardConfig
from models.reward_model import RewardModel, RewardModelConfig
from tasks.post.lib.reward_fit import FrameCache, train


def save_reward_model(model: RewardModel, uri: str) -> None:
    """The model folder at ``uri``: written in place, or built locally and uploaded under an S3 run root."""
    if not storage.is_remote(uri):
        model.save(uri)
        return
    with tempfile.TemporaryDirectory(prefix="reelflow-reward-") as local:
        storage.upload_folder(model.save(os.path.join(local, "m")), uri)


def initial_model(backbone: str, cfg: RewardConfig) -> RewardModel:
    """The backbone with a fresh head seeded by ``cfg.seed``: the same model on every worker."""
    return RewardModel.from_backbone(storage.fetch_folder(backbone), RewardModelConfig(pooling=cfg.pooling),
                                     seed=cfg.seed)


def _join_group() -> tuple[int, int, bool]:
    """(rank, world, created): the default process group Ray Train made, or one from the launcher's env."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, False
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, True


def reward_train_worker(job: dict) -> dict | None:
    """Train the reward model on ``job["pairs"]`` (records with a_uri, b_uri, label); rank 0 returns
    ``{"history", "log_theta"}`` after writing the model to ``job["out_dir"]`` (None elsewhere)."""
    cfg = RewardConfig.model_validate(job["reward"])
    rank, world, created = _join_group()
    try:
        device = job.get("device") or "cpu"
        if torch.cuda.is_available() and job.get("device") is None:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            device = "cuda"
        model = initial_model(job["backbone"], cfg).to(device)
        on_step = None
        if rank == 0 and job.get("mlflow_run"):
            from infra.tracking import Tracker

            tracker = Tracker(job["tracking_uri"], job["experiment"])

            def on_step(record: dict) -> None:
                tracker.log_metrics(job["mlflow_run"], {"loss": record["loss"], "log_theta": record["log_theta"]},
                                    record["step"])

        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.torch_threads or threads)
        try:
            history, tie = train(model, pd.DataFrame(job["pairs"]), FrameCache(cfg.frames), cfg, on_step, rank, world)
        finally:
            torch.set_num_threads(threads)
        if rank == 0:
            save_reward_model(model.to("cpu"), job["out_dir"])
        if world > 1:
            dist.barrier()  # the model is written before any worker reports done
        return {"history": history, "log_theta": tie().item()} if rank == 0 else None
    finally:
        if created:
            dist.destroy_process_group()
