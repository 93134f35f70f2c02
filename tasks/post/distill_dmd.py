"""Stage ``distill-dmd``: a few-step generator distilled from the final checkpoint (report section 3.5, DMD).

The generator, the fake score and the frozen teacher (real score) all start as the final DiT (after
``sft-720p``); the generator learns to sample in ``generator_steps`` steps without guidance what the teacher
samples in many with it (models/dmd.py, tasks/post/lib/dmd_train.py). It learns from the dataset's captions
only: DMD needs no videos. The stage publishes the generator as a diffusers folder (the checkpoint's VAE,
text encoder and scheduler; ``dmd.json`` beside it holds the noise levels it samples at), registers it as a
version of the run's ``dmd`` model (its own: it samples unguided, in its own steps) aliased ``distill-dmd``, and measures it against the teacher on held-out
captions and fixed seeds. Its state is checkpointed in the run's step folder, so a killed stage resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import pyarrow as pa
import torch

from infra import manifest as mf
from infra import storage
from infra.checkpoints import CHECKPOINT, checkpoint_dir, register, steps_dir
from infra.config_post import DMDConfig
from infra.config_train import TrainConfig, fps_index
from infra.manifest import Manifest
from infra.stage import StageContext, StageWork, run_stage
from models import dmd
from models.checkpoint import pipeline_class_name
from models.df_vae import decode
from models.dit import check_checkpoint, load_transformer, write_checkpoint
from models.latent_encode import encode_text
from tasks.post.lib.dmd_train import Nets, Problem, distill, evaluate, regression_pairs
from tasks.post.lib.view_captions import view_captions
from tasks.train.lib.samples import frozen_parts

NAME = "distill-dmd"
SETTINGS = dmd.SETTINGS_FILE
FPS = 24  # the SFT data's rate


def captions(dataset: Manifest, count: int, seed: int) -> list[str]:
    """`count` distinct T2V captions of the dataset's clips, a seeded choice."""
    found = view_captions(dataset, NAME, "to learn from")
    return random.Random(f"{seed}:dmd").sample(found, min(count, len(found)))


def text_states(parts: dict, texts: list[str], text_len: int) -> torch.Tensor:
    """umT5 states (N, text_len, D), zero past each text's end, as the pipelines pad them."""
    states = encode_text(parts["tokenizer"], parts["text_encoder"], texts, text_len)
    out = torch.zeros(len(states), text_len, states[0].shape[1])
    for i, s in enumerate(states):
        out[i, :len(s)] = s
    return out


def run(ctx: StageContext, cfg: DMDConfig, train: TrainConfig, init: Manifest, dataset: Manifest) -> Manifest:
    """Distill ``init``'s checkpoint (the final DiT) into a ``cfg.generator_steps``-step generator."""
    init_uri = checkpoint_dir(init)
    init_dir = storage.fetch_folder(init_uri)
    check_checkpoint(init_dir)
    if cfg.resolution not in train.resolutions:
        raise ValueError(f"post.dmd.resolution={cfg.resolution!r}: allowed values are {sorted(train.resolutions)}")
    if cfg.frames % 4 != 1:
        raise ValueError(f"post.dmd.frames must be 4k+1 for the VAE, got {cfg.frames}: use {cfg.frames // 4 * 4 + 1}")
    if cfg.min_sigma >= cfg.max_sigma:
        raise ValueError(f"post.dmd.min_sigma ({cfg.min_sigma}) must be below max_sigma ({cfg.max_sigma})")
    height, width = train.resolutions[cfg.resolution].size(16 / 9)
    extra = {"size": [height, width], "text_len": train.latents.text_len}
    key_extra = hashlib.sha256(repr(sorted(extra.items())).encode()).hexdigest()[:16]

    def body(work: StageWork) -> pa.Table:
        ctx.tracker.log_params(work.mlflow_run, {"size": extra["size"], "init_checkpoint": init_uri})
        folder = steps_dir(ctx, NAME, mf.resume_key(key_extra, [init, dataset]))
        storage.makedirs(folder)
        parts = frozen_parts(init_dir)
        chosen = captions(dataset, cfg.prompts + cfg.eval_prompts, cfg.seed)
        # Held out: up to eval_prompts captions, leaving at least one to learn from; a dataset with a single
        # caption is measured on it (at seeds no training draw uses), which the stats say.
        hold = min(cfg.eval_prompts, len(chosen) - 1)
        learn, held_out = (chosen[hold:], chosen[:hold]) if hold else (chosen, chosen)
        with torch.no_grad():
            states = text_states(parts, learn + held_out + [""], train.latents.text_len)
        teacher = load_transformer(init_dir)
        nets = Nets(teacher, load_transformer(init_dir), load_transformer(init_dir))
        vae_stride = parts["vae"].config.scale_factor_spatial
        shape = (teacher.config.in_channels, 1 + (cfg.frames - 1) // 4, height // vae_stride, width // vae_stride)
        problem = Problem(states[:len(learn)], states[-1:], shape,
                          fps_index(FPS) if teacher.config.inject_sample_info else None,
                          dmd.generator_sigmas(cfg.generator_steps, cfg.generator_shift))
        if cfg.regression_weight > 0:
            problem.pairs = regression_pairs(nets, problem, cfg, parts["scheduler"])
        history = distill(nets, problem, cfg, folder, on_step=lambda i, row: ctx.tracker.log_metrics(
            work.mlflow_run, {k: v for k, v in row.items() if k != "iteration"}, step=i))
        report = evaluate(nets, problem, cfg, parts["scheduler"], lambda z: decode(parts["vae"], z),
                          states[len(learn):len(learn) + len(held_out)])
        out_dir = storage.join(work.tmp_uri, CHECKPOINT)
        local = os.path.join(work.scratch_dir, CHECKPOINT) if storage.is_remote(out_dir) else out_dir
        write_checkpoint(init_dir, nets.generator, local, pipeline_class_name(init_dir))
        with open(os.path.join(local, SETTINGS), "w") as f:  # how to sample it (tasks/generate/lib/dmd_video.py)
            json.dump({"sampler": "dmd-multistep", "sigmas": problem.sigmas, "guidance_scale": 1.0,
                       "teacher": init_uri}, f, indent=2)
        if local != out_dir:
            storage.upload_folder(local, out_dir)
        metrics = {"generator_psnr_db": report["generator"]["psnr_db"],
                   "generator_latent_relative_l2": report["generator"]["latent_relative_l2"],
                   "teacher_few_psnr_db": report["teacher_few"]["psnr_db"],
                   "teacher_few_latent_relative_l2": report["teacher_few"]["latent_relative_l2"],
                   **{k: v for k, v in report.items() if k.startswith("speedup_")},
                   "generator_updates": sum("generator_loss" in r for r in history)}
        work.metrics.update(metrics)
        work.stats.update({**metrics, "checkpoint": storage.join(work.final_uri, CHECKPOINT), "evaluation": report,
                           "held_out_prompts": held_out, "prompts": learn, "sigmas": problem.sigmas,
                           "evaluated_on_training_caption": not hold})
        return pa.Table.from_pylist([{k: row.get(k) for k in ("iteration", "generator_level", "fake_loss",
                                                               "generator_loss", "dmd_gradient_norm")}
                                     for row in history])

    published = run_stage(ctx, NAME, cfg, [init, dataset], body, key_extra)
    register(ctx, published, "dmd")
    return published
