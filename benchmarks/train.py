"""Trainer hot-path cost: reelflow's training loop vs a minimal hand-written diffusers loop.

    python benchmarks/train.py --steps 30 --repeats 5 --out benchmarks/results/train.json

Same tiny SkyReels-V2 DiT (same initial weights), same batches (the trainer's own bucketed stream,
replayed by the reference), same noise and t, same AdamW settings, in one process. The reference is
the loop a researcher would write: stack, noise, forward, MSE, backward, clip, step. reelflow adds
bucketing/collation from the cache, per-step metrics, progress bar and a final step checkpoint.
Runs alternate (reference first, then reelflow first) and the ratio of median tokens/s is reported.
Target (issue 5): reelflow >= 0.95x the reference on the hot path, i.e. tokens/s over steps 2..N timed
by a tick after each step in both loops (the first step's warm-up, the resume check and the final step
checkpoint fall outside); the whole call's ratio, those included, is reported beside it.

GPU (issue 5's second target: Wan-1.3B, bf16, MFU) is `--gpu-mfu`, run on a lent GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.config import load_config  # noqa: E402
from models import flow_matching as fm  # noqa: E402
from models.checkpoint import build_components  # noqa: E402
from tasks.train.lib.data import batch_stream, bucket_batch_size, tokens_per_sample  # noqa: E402
from tasks.train.lib.engine import PlainEngine  # noqa: E402
from tasks.train.lib.latent_cache import Sample  # noqa: E402
from tasks.train.lib.loop import LoopSpec, step_noise, train  # noqa: E402


class SyntheticCache:
    """Cached-latent shaped samples of the tiny 256p and 540p buckets (17 frames -> 5 latent frames)."""

    def __init__(self, shape: tuple[int, int, int, int], n: int = 32, text_len: int = 24):
        gen = torch.Generator().manual_seed(0)
        self.items = [Sample(f"c{i}", "video", "b", torch.randn(*shape, generator=gen),
                             torch.randn(text_len, 32, generator=gen), 24) for i in range(n)]

    def buckets(self):
        return {"b": list(range(len(self.items)))}

    def get(self, i):
        return self.items[i]


def reference_loop(model, batches, stage, cfg, text_len: int, ticks: list[float]) -> float:
    """The minimal hand-written loop on the same batches; returns seconds, appends a tick per step."""
    opt = torch.optim.AdamW(
        [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": stage.weight_decay},
         {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}],
        lr=stage.lr, betas=stage.betas, eps=1e-8)
    started = time.perf_counter()
    for step, samples in enumerate(batches):
        x1 = torch.stack([s.latent for s in samples])
        text = torch.zeros(len(samples), text_len, 32)
        for i, s in enumerate(samples):
            text[i, : s.text.shape[0]] = s.text
        x0, t = step_noise(stage.seed, step, x1, cfg)
        out = model(hidden_states=fm.interpolate(x1, x0, t), timestep=(1 - t) * 1000, encoder_hidden_states=text,
                    fps=[1] * len(samples), return_dict=False)[0]
        loss = ((-out - (x1 - x0)) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), stage.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ticks.append(time.perf_counter())
    return time.perf_counter() - started


def reelflow_loop(model, cache, stage, cfg, res, text_len: int, ticks: list[float]) -> float:
    with tempfile.TemporaryDirectory() as steps_dir:
        started = time.perf_counter()
        train(PlainEngine(model, stage), cache, LoopSpec(stage, cfg, res, steps_dir, text_len),
              on_step=lambda row: ticks.append(time.perf_counter()))
        return time.perf_counter() - started


def scenario(name: str, res_name: str, steps: int, repeats: int) -> dict:
    cfg = load_config("tiny").train
    res = cfg.resolutions[res_name]
    height, width = res.size(16 / 9)
    shape = (16, 5, height // 8, width // 8)
    stage = cfg.stages["pretrain-256p"].model_copy(
        update={"steps": steps, "checkpoint_every": 10**6, "warmup_steps": 0, "lr_end": None})
    text_len = cfg.latents.text_len
    cache = SyntheticCache(shape)
    size = bucket_batch_size(tokens_per_sample(shape), res)
    stream = batch_stream(cache.buckets(), {"b": size}, stage.seed)
    batches = [[cache.get(i) for i in next(stream)[1]] for _ in range(steps)]  # the trainer's own order
    tokens = sum(tokens_per_sample(shape) * len(b) for b in batches)
    init = build_components("tiny")["transformer"].state_dict()
    hot_tokens = sum(tokens_per_sample(shape) * len(b) for b in batches[1:])
    runs = {"reference": [], "reelflow": []}
    whole = {"reference": [], "reelflow": []}
    for rep in range(repeats):
        order = ("reference", "reelflow") if rep % 2 == 0 else ("reelflow", "reference")
        for who in order:
            model = build_components("tiny")["transformer"]
            model.load_state_dict(init)
            model.train()
            ticks: list[float] = []
            seconds = (reference_loop(model, batches, stage, cfg, text_len, ticks) if who == "reference"
                       else reelflow_loop(model, cache, stage, cfg, res, text_len, ticks))
            runs[who].append(hot_tokens / (ticks[-1] - ticks[0]))
            whole[who].append(tokens / seconds)
    med = {k: statistics.median(v) for k, v in runs.items()}
    med_whole = {k: statistics.median(v) for k, v in whole.items()}
    return {"bucket": f"{res_name} {height}x{width}, 17 frames -> latent {list(shape)}", "batch": size,
            "steps": steps, "hot_path_tokens_per_s": runs, "median_tokens_per_s": med,
            "ratio_reelflow_over_reference": med["reelflow"] / med["reference"],
            "whole_call_tokens_per_s": whole, "whole_call_ratio": med_whole["reelflow"] / med_whole["reference"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/train.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"machine": {"host": platform.node(), "cpus": len(os.sched_getaffinity(0)), "arch": platform.machine(),
                          "torch": torch.__version__, "threads": args.threads, "note": "shared host; medians"},
              "target": "reelflow hot-path tokens/s >= 0.95x reference", "scenarios": {}}
    for name, res_name in (("tiny-256p", "256p"), ("tiny-540p", "540p")):
        result["scenarios"][name] = scenario(name, res_name, args.steps, args.repeats)
        print(name, json.dumps(result["scenarios"][name]["median_tokens_per_s"]),
              f"ratio {result['scenarios'][name]['ratio_reelflow_over_reference']:.3f}",
              f"whole-call ratio {result['scenarios'][name]['whole_call_ratio']:.3f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
