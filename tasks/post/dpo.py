"""Stages dpo-1..N: one round of iterative motion Flow-DPO each (report section 3.4.1, Eq. 4).

A round, as the report's pseudocode: sample ``samples_per_prompt`` videos per prompt from the current
checkpoint, score them with the reward model, take the best as chosen and the worst as rejected, train the
policy on those pairs against a frozen copy of the round's starting DiT, publish. The next round starts from
this checkpoint, so its reference is this round's result (the report's "refresh the reference").

Samples come from diffusers' own pipelines (as ``tasks.train.lib.samples``): ``output_type="latent"`` returns the
latents the DiT denoised, normalised as the latent cache's (the pipelines de-normalise only to decode), so
they are training latents as they are; we decode them ourselves for the reward model. The round's pairs are
saved beside the step checkpoints, so a killed round resumes training on the very same pairs.

Sampling and scoring run here, in the flow's process; training goes through pretraining's launcher
(``tasks.train.lib.launch``: in-process, local processes or Ray Train workers, DeepSpeed), each worker reading
the pairs from the step folder (``tasks.post.lib.dpo_train``), with the reference offloaded or partitioned,
never a whole second copy on the training device.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import tempfile
import time

import numpy as np
import pyarrow as pa
import torch

from infra import manifest as mf
from infra import storage
from infra.checkpoints import CHECKPOINT, checkpoint_dir, register, steps_dir
from infra.config_post import DPOConfig
from infra.config_train import TrainStageConfig
from infra.manifest import Manifest
from infra.raydata import local_device
from infra.stage import StageContext, StageWork, run_stage
from infra.video import write_video
from models.checkpoint import is_diffusion_forcing
from models.dit import check_checkpoint, load_transformer
from models.latent_encode import denormalise_latents, encode_text
from models.reward_model import sample_indices
from tasks.post.lib.dpo_train import dpo_train_worker
from tasks.post.lib.reward_io import load_reward_model
from tasks.post.lib.view_captions import view_captions
from tasks.train.lib.launch import launch
from tasks.train.lib.objective_dpo import FlowDPO, Pair, PairCache, measure_margin
from tasks.train.lib.samples import frozen_parts, reference_pipeline

log = logging.getLogger("reelflow.dpo")
PAIRS = "pairs.pt"  # the round's pairs in its step folder: read back on resume and by every training worker
FPS = 24  # the SFT data's rate (fps_only: 24); the DF pipelines' default
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def choose_prompts(dataset: Manifest, cfg: DPOConfig, round: int) -> list[str]:
    """``cfg.prompts`` distinct T2V captions of the dataset's clips, a seeded choice that differs per round."""
    captions = view_captions(dataset, f"dpo-{round}", "to prompt with")
    return random.Random(f"{cfg.seed}:{round}").sample(captions, min(cfg.prompts, len(captions)))


def sample_seed(seed: int, round: int, prompt: int, k: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{round}:{prompt}:{k}".encode()).digest()[:7], "big")


class Generator:
    """The checkpoint's frozen parts (VAE, umT5, tokenizer, scheduler) and the pipeline its DiT needs."""

    def __init__(self, init_dir: str, cfg: DPOConfig, height: int, width: int):
        self.parts = frozen_parts(init_dir)
        for part in ("vae", "text_encoder"):
            self.parts[part].to(DEVICE)
        self.cfg, self.height, self.width = cfg, height, width
        self.diffusion_forcing = is_diffusion_forcing(init_dir)

    @torch.no_grad()
    def __call__(self, transformer, prompt: str, seeds: list[int]) -> tuple[torch.Tensor, np.ndarray]:
        """(normalised latents [K, C, F, h, w], frames uint8 [K, T, H, W, 3]): one video per seed."""
        was_training = transformer.training
        transformer.eval()
        try:
            pipe, extra = reference_pipeline(transformer, self.parts, self.diffusion_forcing, self.cfg.frames, FPS)
            # diffusers' DF forward tiles the FPS embedding frame-major against batch-major timesteps
            # (a shape error for B > 1): one video per call while the DiT has the embedding
            chunk = 1 if transformer.config.inject_sample_info else len(seeds)
            latents = torch.cat([
                pipe(prompt, height=self.height, width=self.width, num_frames=self.cfg.frames,
                     num_inference_steps=self.cfg.sample_steps, guidance_scale=self.cfg.guidance_scale,
                     num_videos_per_prompt=len(part), output_type="latent", **extra,
                     generator=[torch.Generator().manual_seed(s) for s in part]).frames.float().cpu()
                for part in (seeds[i:i + chunk] for i in range(0, len(seeds), chunk))])
            vae = self.parts["vae"]
            video = vae.decode(denormalise_latents(vae, latents).to(vae.dtype), return_dict=False)[0]
            frames = pipe.video_processor.postprocess_video(video, output_type="np")
            return latents, (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
        finally:
            transformer.train(was_training)


def score_videos(reward_model, frames: np.ndarray, count: int) -> torch.Tensor:
    """Reward-model scores of uint8 videos [K, T, H, W, 3], each seen through the ``count`` frames the reward
    model was trained on (``models.reward_model.sample_indices``: consecutive pairs spread over the video)."""
    index = sample_indices(frames.shape[1], count)
    return reward_model.score([clip[index] for clip in frames]).float()


def generate_and_score(generator: Generator, transformer, reward_model, prompts: list[str], seeds: list[list[int]],
                       reward_frames: int) -> tuple[list[torch.Tensor], list[np.ndarray], torch.Tensor]:
    latents, frames, scores = [], [], []
    for prompt, prompt_seeds in zip(prompts, seeds, strict=True):
        lat, video = generator(transformer, prompt, prompt_seeds)
        latents.append(lat)
        frames.append(video)
        scores.append(score_videos(reward_model, video, reward_frames))
    return latents, frames, torch.stack(scores)


def _save_atomic(obj, path: str) -> None:
    """Locally: write and rename. On an object store one PUT is atomic: the object appears whole or not at all."""
    if storage.is_remote(path):
        with tempfile.TemporaryDirectory(prefix="reelflow-pairs-") as tmp:
            torch.save(obj, os.path.join(tmp, "obj.pt"))
            storage.upload(os.path.join(tmp, "obj.pt"), path)
        return
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def build_pairs(ctx: StageContext, cfg: DPOConfig, round: int, prompts: list[str], generator: Generator, policy,
                reward_model, folder: str) -> dict:
    """Steps 1-3 of a round: sample, score, best vs worst; saved under ``folder`` (reloaded on resume;
    a local folder or an S3 prefix under the run)."""
    path = storage.join(folder, PAIRS)
    if storage.exists(path):
        log.warning("dpo-%d: reusing the round's pairs from %s", round, path)
        with storage.local_copy(path) as local:
            return torch.load(local, weights_only=False)
    seeds = [[sample_seed(cfg.seed, round, p, k) for k in range(cfg.samples_per_prompt)] for p in range(len(prompts))]
    latents, frames, scores = generate_and_score(generator, policy, reward_model(), prompts, seeds,
                                                 ctx.cfg.post.reward.frames)
    order = scores.argsort(dim=1, stable=True)
    best, worst = order[:, -1].tolist(), order[:, 0].tolist()
    text = encode_text(generator.parts["tokenizer"], generator.parts["text_encoder"], prompts,
                       ctx.cfg.train.latents.text_len)
    round_pairs = {"prompts": prompts, "seeds": seeds, "scores": scores, "best": best, "worst": worst,
                   "pairs": [Pair(lat[b], lat[w], emb, FPS)
                             for lat, b, w, emb in zip(latents, best, worst, text, strict=True)]}
    with tempfile.TemporaryDirectory(prefix="reelflow-dpo-videos-") as videos:
        for p, (video, b, w) in enumerate(zip(frames, best, worst, strict=True)):
            write_video(video[b], os.path.join(videos, f"prompt{p}-chosen.mp4"), fps=FPS)
            write_video(video[w], os.path.join(videos, f"prompt{p}-rejected.mp4"), fps=FPS)
        storage.upload_folder(videos, storage.join(folder, "videos"))
    _save_atomic(round_pairs, path)
    return round_pairs


def summarise(pairs: dict, after: torch.Tensor, start: dict, end: dict, history: list[dict], clock: list[float]
              ) -> dict[str, float]:
    """The round's numbers, what shows a round improved the policy: reward-model scores before (all samples, chosen, rejected) and after,
    the implicit reward margin on the round's pairs at its start and end, per-step firsts and lasts, timings."""
    before = pairs["scores"]
    return {
        "rm_score_before": before.mean().item(), "rm_score_after": after.mean().item(),
        "rm_score_chosen": before.gather(1, torch.tensor(pairs["best"])[:, None]).mean().item(),
        "rm_score_rejected": before.gather(1, torch.tensor(pairs["worst"])[:, None]).mean().item(),
        "margin_start": start["implicit_reward_margin"], "margin_end": end["implicit_reward_margin"],
        "accuracy_start": start["accuracy"], "accuracy_end": end["accuracy"],
        "margin_first_step": history[0]["implicit_reward_margin"],
        "margin_last_step": history[-1]["implicit_reward_margin"],
        "first_loss": history[0]["loss"], "final_loss": history[-1]["loss"], "pairs": len(pairs["pairs"]),
        "steps": len(history),
        **{f"seconds_{phase}": b - a for phase, a, b in zip(("pairs", "training", "after"), clock[:-1], clock[1:],
                                                            strict=True)}}


def run(ctx: StageContext, cfg: DPOConfig, round: int, init: Manifest, reward: Manifest, dataset: Manifest) -> Manifest:
    """Round ``round`` of Flow-DPO from ``init``'s checkpoint, with ``reward``'s model, on ``dataset``'s captions."""
    name, train_cfg = f"dpo-{round}", ctx.cfg.train
    local_device(name, cfg.resources, DEVICE)  # sampling and training run here: a declared GPU must be visible
    init_uri = checkpoint_dir(init)
    init_dir = storage.fetch_folder(init_uri)  # under an S3 run root: a node-local copy
    check_checkpoint(init_dir)
    if cfg.resolution not in train_cfg.resolutions:
        raise ValueError(f"post.dpo.resolution={cfg.resolution!r}: allowed values are {sorted(train_cfg.resolutions)}")
    res = train_cfg.resolutions[cfg.resolution]
    height, width = res.size(16 / 9)
    # What shapes the round besides its config: the round number, the sizes and encoders it reads.
    extra = {"round": round, "resolution": res.model_dump(mode="json"), "text_len": train_cfg.latents.text_len,
             "reward_frames": ctx.cfg.post.reward.frames, "engine": train_cfg.engine,
             "zero_stage": train_cfg.zero_stage, "num_workers": train_cfg.num_workers,
             "logit_normal": [train_cfg.logit_normal_mean, train_cfg.logit_normal_std]}
    key_extra = hashlib.sha256(repr(sorted(extra.items())).encode()).hexdigest()[:16]

    def body(work: StageWork) -> pa.Table:
        ctx.tracker.log_params(work.mlflow_run, {"round": extra, "init_checkpoint": init_uri})
        folder = steps_dir(ctx, name, mf.resume_key(key_extra, [init, reward, dataset]))
        storage.makedirs(folder)
        policy = load_transformer(init_dir).to(DEVICE)
        reward_model = functools.cache(lambda: load_reward_model(reward).to(DEVICE))  # loaded once, when needed
        generator = Generator(init_dir, cfg, height, width)
        prompts = choose_prompts(dataset, cfg, round)
        clock = [time.perf_counter()]
        pairs = build_pairs(ctx, cfg, round, prompts, generator, policy, reward_model, folder)
        cache = PairCache(pairs["pairs"])
        # The driver's reference only measures margins; it stays on the CPU (the workers' offload rule).
        objective = FlowDPO(load_transformer(init_dir), train_cfg, cfg.beta)  # frozen: the round's starting DiT
        stage = TrainStageConfig(dataset=dataset.stage, resolution=cfg.resolution, phase="post", steps=cfg.steps,
                                 lr=cfg.lr, checkpoint_every=cfg.checkpoint_every, seed=cfg.seed * 1000 + round,
                                 fps_embedding=bool(policy.config.inject_sample_info))
        margin = {"draws": cfg.margin_draws, "seed": stage.seed, "batch_size": cfg.batch_size,
                  "text_len": train_cfg.latents.text_len}
        start = measure_margin(policy, objective, cache, **margin)
        del policy  # each training worker loads its own from the init checkpoint
        clock.append(time.perf_counter())
        out_dir = storage.join(work.tmp_uri, CHECKPOINT)
        # batch = cfg.batch_size pairs whatever the token budget (each pair is two videos of one shape)
        job = {"stage": stage.model_dump(mode="json"), "train": train_cfg.model_dump(mode="json"),
               "resolution": res.model_copy(update={"max_batch": cfg.batch_size, "token_budget": 2**62}
                                            ).model_dump(mode="json"),
               "init_dir": init_uri, "pairs": storage.join(folder, PAIRS), "steps_dir": folder, "out_dir": out_dir,
               "beta": cfg.beta, "tracking_uri": ctx.tracker.tracking_uri,
               "experiment": ctx.cfg.tracking.experiment, "mlflow_run": work.mlflow_run}
        history = launch(dpo_train_worker, job, train_cfg, storage.join(ctx.run_uri, ".ray-train", name))
        clock.append(time.perf_counter())
        trained_dir = out_dir
        if storage.is_remote(out_dir):  # a fresh copy (never the node cache: a retried round rewrites this URI)
            trained_dir = os.path.join(work.scratch_dir, CHECKPOINT)
            storage.download_folder(out_dir, trained_dir)
        trained = load_transformer(trained_dir).to(DEVICE)  # what rank 0 wrote
        end = measure_margin(trained, objective, cache, **margin)
        after = generate_and_score(generator, trained, reward_model(), prompts, pairs["seeds"],
                                   ctx.cfg.post.reward.frames)[2]
        clock.append(time.perf_counter())
        summary = summarise(pairs, after, start, end, history, clock)
        log.warning("dpo-%d: margin %.4f -> %.4f, reward-model score %.4f -> %.4f", round, summary["margin_start"],
                    summary["margin_end"], summary["rm_score_before"], summary["rm_score_after"])
        work.metrics.update(summary)
        work.stats.update({**summary, "checkpoint": storage.join(work.final_uri, CHECKPOINT), "prompts": prompts,
                           "margin_at_start": start, "margin_at_end": end, "scores_before": pairs["scores"].tolist(),
                           "scores_after": after.tolist(), "chosen": pairs["best"], "rejected": pairs["worst"]})
        videos = storage.fetch_folder(storage.join(folder, "videos"))
        work.artifacts += [os.path.join(videos, f) for f in sorted(os.listdir(videos)) if f != storage.COMPLETE]
        return pa.Table.from_pylist(history)

    published = run_stage(ctx, name, cfg, [init, reward, dataset], body, key_extra)
    register(ctx, published, "dit")
    return published
