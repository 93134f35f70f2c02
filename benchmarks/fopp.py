"""FoPP schedule sampling vs a tiny-profile diffusion-forcing training step, one process, one JSON.

    python benchmarks/fopp.py --out benchmarks/results/fopp.json

Issue 7 target: for F = 25 latent frames and T = 1000 steps, sampling a batch's per-frame timesteps
(`models.fopp.sample_fopp`, report section 3.4.2) costs < 1% of a tiny-profile training step, measured in
the same run. The step is the tiny SkyReels-V2 DiT (`build_components("tiny")`) on a [1, 16, 25, 8, 14]
latent with FoPP timesteps, fps conditioning and `enable_diffusion_forcing=True`: forward, flow-matching
loss (report Eq. 1-3) and backward; the optimizer update is left out, so the step time, and the margin, is
a lower bound. Sampling and steps are interleaved and reported as medians (the host is shared, one thread).
The DP table is built once per (F, T) and cached; its cold build is reported on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/fopp.json")
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--steps", type=int, default=1000, help="T, the training timesteps")
    parser.add_argument("--batch", type=int, default=8, help="schedules per sampling call")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved (sampling, training step) rounds")
    parser.add_argument("--samples-per-round", type=int, default=200, help="sampling calls averaged per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from models.checkpoint import build_components
    from models.fopp import log_completion_table, sample_fopp

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    sample_fopp(args.batch, args.frames, args.steps, gen)  # builds and caches the DP table
    cold = time.perf_counter() - started
    log_completion_table.cache_clear()
    started = time.perf_counter()
    log_completion_table(args.frames - 1, args.steps)
    table_build = time.perf_counter() - started

    model = build_components("tiny")["transformer"].train()
    latent = torch.randn(1, 16, args.frames, 8, 14, generator=gen)
    text = torch.randn(1, 512, 32, generator=gen)

    def training_step() -> None:
        step_index = sample_fopp(1, args.frames, args.steps, gen)
        sigma = (step_index.float() / args.steps)[:, None, :, None, None]  # index s -> noise level s / T
        noise = torch.randn(latent.shape, generator=gen)
        noisy = (1 - sigma) * latent + sigma * noise  # Eq. 1 with t = 1 - sigma on the data side
        pred = model(hidden_states=noisy, timestep=step_index, encoder_hidden_states=text,
                     enable_diffusion_forcing=True, fps=[1], return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred, latent - noise)  # Eq. 2-3: velocity x1 - x0
        loss.backward()
        model.zero_grad(set_to_none=True)

    training_step()  # warm-up: allocator, kernels
    sample_s, step_s = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for _ in range(args.samples_per_round):
            sample_fopp(args.batch, args.frames, args.steps, gen)
        sample_s.append((time.perf_counter() - started) / args.samples_per_round)
        started = time.perf_counter()
        training_step()
        step_s.append(time.perf_counter() - started)

    sample_median, step_median = statistics.median(sample_s), statistics.median(step_s)
    report = {
        "frames": args.frames, "timesteps": args.steps, "batch": args.batch, "rounds": args.rounds,
        "samples_per_round": args.samples_per_round, "threads": args.threads,
        "latent_shape": list(latent.shape), "text_shape": list(text.shape),
        "sample_batch_ms": round(sample_median * 1e3, 4),
        "training_step_ms": round(step_median * 1e3, 3),
        "ratio": round(sample_median / step_median, 5),
        "target_ratio": 0.01,
        "first_call_ms": round(cold * 1e3, 3), "dp_table_build_ms": round(table_build * 1e3, 3),
        "step_measures": "forward + flow-matching loss + backward (no optimizer update)",
        "sample_batch_ms_all": [round(s * 1e3, 4) for s in sample_s],
        "training_step_ms_all": [round(s * 1e3, 3) for s in step_s],
        "host": platform.node(), "cpus": len(os.sched_getaffinity(0)), "machine": platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("sample_batch_ms", "training_step_ms", "ratio", "target_ratio")}))
    return report


if __name__ == "__main__":
    main()
