"""The loop of stage ``distill-dmd`` and its comparison with the teacher (report section 3.5; the math is
models/dmd.py).

Each iteration updates the fake score once on fresh generator samples (flow matching on them); every
``fake_updates_per_generator``-th iteration also updates the generator by the distribution-matching gradient
(the report's 5:1). Every draw is a function of (seed, iteration), and the whole state (both networks, both
optimizers, the history) is saved atomically every ``checkpoint_every`` iterations, so a killed stage resumes
where it stopped and continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from infra import storage
from infra.config_post import DMDConfig
from models import dmd
from models.df_solver import make_solvers

STATE = "dmd-state.pt"


@dataclass
class Nets:
    teacher: torch.nn.Module  # frozen: the real score
    generator: torch.nn.Module
    fake: torch.nn.Module


@dataclass
class Problem:
    """What the generator is asked for: text states (P, L, D), the negative (1, L, D), latent shape (C, F, h, w)."""

    texts: torch.Tensor
    negative: torch.Tensor
    shape: tuple[int, int, int, int]
    fps: int | None  # FPS-embedding index, None when the DiT has none
    sigmas: list[float]  # the generator's noise levels
    pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # regression: (text rows, noise, teacher)

    def fps_list(self, batch: int) -> list[int] | None:
        return None if self.fps is None else [self.fps] * batch


def _generator(seed: int, iteration: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + iteration)


def _save(state: dict, uri: str) -> None:
    """Write then rename locally; one PUT (atomic) on an object store."""
    if storage.is_remote(uri):
        with tempfile.TemporaryDirectory(prefix="reelflow-dmd-") as tmp:
            torch.save(state, os.path.join(tmp, STATE))
            storage.upload(os.path.join(tmp, STATE), uri)
        return
    torch.save(state, uri + ".tmp")
    os.replace(uri + ".tmp", uri)


def iterate(nets: Nets, problem: Problem, cfg: DMDConfig, iteration: int, opt_g, opt_f) -> dict[str, float]:
    """One iteration: a fake-score update and, every `fake_updates_per_generator`-th, a generator update."""
    gen = _generator(cfg.seed, iteration)
    rows = torch.randint(0, len(problem.texts), (cfg.batch_size,), generator=gen)
    text, fps = problem.texts[rows], problem.fps_list(cfg.batch_size)
    shape = (cfg.batch_size, *problem.shape)
    noise = torch.randn(shape, generator=gen)
    level = int(torch.randint(0, len(problem.sigmas), (1,), generator=gen))  # backward simulation
    update_generator = (iteration + 1) % cfg.fake_updates_per_generator == 0
    with torch.no_grad():  # backward simulation: the generator's own input at `level`
        x_in = dmd.input_at(nets.generator, text, fps, problem.sigmas, noise, level)
    sigma_g = torch.full((cfg.batch_size,), problem.sigmas[level])
    with torch.set_grad_enabled(update_generator):
        x = dmd.data_prediction(x_in, dmd.velocity(nets.generator, x_in, sigma_g, text, fps), sigma_g)
    row: dict[str, float] = {"generator_level": float(level)}
    span = cfg.max_sigma - cfg.min_sigma
    if update_generator:
        sigma = cfg.min_sigma + span * torch.rand(cfg.batch_size, generator=gen)
        x_t = dmd.noised(x.detach(), torch.randn(shape, generator=gen), sigma)
        with torch.no_grad():
            negative = problem.negative.expand(cfg.batch_size, -1, -1)
            real = dmd.data_prediction(x_t, dmd.guided_velocity(nets.teacher, x_t, sigma, text, negative, fps,
                                                                cfg.guidance_scale), sigma)
            fake = dmd.data_prediction(x_t, dmd.velocity(nets.fake, x_t, sigma, text, fps), sigma)
        gradient = dmd.dmd_gradient(x.detach(), real, fake)
        loss = dmd.generator_loss(x, gradient)
        if problem.pairs is not None and cfg.regression_weight > 0:  # DMD Eq. 9: the whole K-step sample
            pick = torch.randint(0, len(problem.pairs[0]), (cfg.batch_size,), generator=gen)
            rows_r, noise_r, target = (t[pick] for t in problem.pairs)
            video = dmd.sample(nets.generator, problem.texts[rows_r], fps, problem.sigmas, noise_r)
            regression = torch.nn.functional.mse_loss(video, target)
            loss = loss + cfg.regression_weight * regression
            row["regression_loss"] = float(regression.detach())
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(nets.generator.parameters(), 1.0)
        opt_g.step()
        row.update(generator_loss=float(loss.detach()), dmd_gradient_norm=float(gradient.norm()))
    sigma = cfg.min_sigma + span * torch.rand(cfg.batch_size, generator=gen)
    eps = torch.randn(shape, generator=gen)
    loss_f = dmd.fake_score_loss(dmd.velocity(nets.fake, dmd.noised(x.detach(), eps, sigma), sigma, text, fps),
                                 x, eps)
    opt_f.zero_grad(set_to_none=True)
    loss_f.backward()
    torch.nn.utils.clip_grad_norm_(nets.fake.parameters(), 1.0)
    opt_f.step()
    row["fake_loss"] = float(loss_f.detach())
    return row


def distill(nets: Nets, problem: Problem, cfg: DMDConfig, folder: str,
            on_step: Callable[[int, dict], None] = lambda i, row: None) -> list[dict]:
    """Run (or resume from `folder`) the iterations; the per-iteration history."""
    nets.teacher.eval().requires_grad_(False)
    nets.generator.train().requires_grad_(True)
    nets.fake.train().requires_grad_(True)
    opt_g = torch.optim.AdamW(nets.generator.parameters(), lr=cfg.lr_generator, weight_decay=0.0)
    opt_f = torch.optim.AdamW(nets.fake.parameters(), lr=cfg.lr_fake, weight_decay=0.0)
    uri, history = storage.join(folder, STATE), []
    if storage.exists(uri):
        with storage.local_copy(uri) as local:
            state = torch.load(local, weights_only=False)
        nets.generator.load_state_dict(state["generator"])
        nets.fake.load_state_dict(state["fake"])
        opt_g.load_state_dict(state["opt_generator"])
        opt_f.load_state_dict(state["opt_fake"])
        history = state["history"]
    for iteration in range(len(history), cfg.iterations):
        row = {"iteration": iteration, **iterate(nets, problem, cfg, iteration, opt_g, opt_f)}
        history.append(row)
        on_step(iteration, row)
        if (iteration + 1) % cfg.checkpoint_every == 0 or iteration + 1 == cfg.iterations:
            _save({"generator": nets.generator.state_dict(), "fake": nets.fake.state_dict(),
                   "opt_generator": opt_g.state_dict(), "opt_fake": opt_f.state_dict(), "history": history}, uri)
    nets.generator.eval()
    return history


@torch.no_grad()
def teacher_sample(teacher, scheduler, steps: int, text, negative, fps, scale: float, noise) -> torch.Tensor:
    """The teacher as its checkpoint samples: the scheduler (UniPC) over `steps`, classifier-free guidance."""
    scheduler = deepcopy(scheduler)  # the caller's stays as it was
    scheduler.set_timesteps(steps)
    solver = make_solvers(scheduler, 1, steps, noise.device)[0]
    x = noise
    for t in scheduler.timesteps:
        sigma = (t.float() / dmd.NUM_TRAIN_TIMESTEPS).expand(x.shape[0])
        x = solver.step(dmd.guided_velocity(teacher, x, sigma, text, negative, fps, scale), t, x)
    return x


def regression_pairs(nets: Nets, problem: Problem, cfg: DMDConfig, scheduler) -> tuple:
    """DMD's paired data (Eq. 9): `regression_pairs` noises (seeded; none the evaluation uses) and the
    teacher's `teacher_steps` guided videos from them, over the learning captions in turn."""
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 1)
    rows = torch.arange(cfg.regression_pairs) % len(problem.texts)
    noise = torch.randn((cfg.regression_pairs, *problem.shape), generator=gen)
    videos = [teacher_sample(nets.teacher, scheduler, cfg.teacher_steps, problem.texts[r:r + 1], problem.negative,
                             problem.fps_list(1), cfg.guidance_scale, noise[i:i + 1]) for i, r in enumerate(rows)]
    return rows, noise, torch.cat(videos)


def _timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def evaluate(nets: Nets, problem: Problem, cfg: DMDConfig, scheduler, decode: Callable, texts: torch.Tensor,
             keep_latents: bool = False) -> dict:
    """The generator (its K steps, unguided) and the teacher at K steps (guided, the undistilled few-step
    baseline) against the teacher at `teacher_steps` on fixed captions `texts` and seeds: distance in two
    fixed feature spaces, the VAE's latents (relative L2) and the decoded frames (PSNR, `decode`: latents ->
    frames in [0, 1]), and time per video (median; sampling alone and with the decode). `keep_latents` adds
    every method's outputs, (samples, C, F, h, w) under "latents", for distribution-level measures."""
    rows, outputs = {"generator": [], "teacher_few": []}, {}
    times: dict[str, list[tuple[float, float, float, float]]] = {"teacher": [], "generator": [], "teacher_few": []}
    for p in range(len(texts)):
        text = texts[p:p + 1]
        for s in range(cfg.eval_seeds):
            gen = torch.Generator().manual_seed(10_000 + 97 * p + s)
            noise = torch.randn((1, *problem.shape), generator=gen)
            fps = problem.fps_list(1)
            teacher = partial(teacher_sample, nets.teacher, scheduler, text=text, negative=problem.negative, fps=fps,
                              scale=cfg.guidance_scale, noise=noise)
            runs = {"teacher": partial(teacher, cfg.teacher_steps),
                    "generator": partial(dmd.sample, nets.generator, text, fps, problem.sigmas, noise),
                    "teacher_few": partial(teacher, len(problem.sigmas))}
            out = {}
            for name, run in runs.items():
                with torch.no_grad():
                    latents, wall, cpu = _timed(run)
                    frames, decode_wall, decode_cpu = _timed(partial(decode, latents))
                out[name] = latents, np.asarray(frames, dtype=np.float64)
                outputs.setdefault(name, []).append(latents)
                times[name].append((wall, cpu, wall + decode_wall, cpu + decode_cpu))
            ref_latents, ref_frames = out["teacher"]
            for name in rows:
                latents, frames = out[name]
                mse = float(np.mean((frames - ref_frames) ** 2))
                rows[name].append({"latent_relative_l2": float((latents - ref_latents).norm() / ref_latents.norm()),
                                   "psnr_db": float("inf") if mse == 0 else 10 * float(np.log10(1.0 / mse))})
    report = {name: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for name, rs in rows.items()}
    keys = ("sampling_wall", "sampling_cpu", "with_decode_wall", "with_decode_cpu")
    medians = {name: {k: statistics.median(x[i] for x in t) for i, k in enumerate(keys)} for name, t in times.items()}
    report["seconds_per_video"] = medians
    for k in keys:
        report[f"speedup_{k}"] = medians["teacher"][k] / medians["generator"][k]
    report["samples"] = len(texts) * cfg.eval_seeds
    if keep_latents:
        report["latents"] = {name: torch.cat(x) for name, x in outputs.items()}
    return report
