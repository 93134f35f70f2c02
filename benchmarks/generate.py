"""Long-video diffusion-forcing generation: diffusers reference vs reelflow, one run, one JSON.

    python benchmarks/generate.py --profile tiny --threads 1 --repeats 3 --out benchmarks/results/generate.json

Each generation runs in a fresh process (fair peak memory; `--in-process` saves the start-up on a loaded
host) on the same checkpoint, prompt, seed and settings. Scenarios: `async` (ar_step 5, causal blocks of 5)
and `sync` (ar_step 0); reference and reelflow runs are interleaved and repeated, medians of wall and CPU
time reported, every run kept. One more untimed run per side counts the DiT's FLOPs per video
(FlopCounterMode, `models/df_flops.py`); timed runs give `dit_cpu_seconds` (process time inside DiT calls).
Upstream's long-video defaults (ar_step 5, blocks of 5, overlap 17, addnoise 20, 257 frames):
`--scenarios async --num-frames 257 --repeats 5 --out benchmarks/results/generate_upstream_defaults.json`.
CPU there (cProfile, one in-process run each): the reference ~40% VAE decode (a latent frame per call,
F.normalize ~15%), ~35% DiT (280 calls), ~20% 1,950 UniPC steps (scalars recomputed per step); reelflow ~55%
DiT (140 calls), ~35% VAE decode (multi-frame calls: oneDNN conv arithmetic left), ~5% solver (390 steps,
scalars once: models/df_solver.py). Wall time is noisy on a shared host; CPU time is the steadier figure.

TeaCache (arXiv 2411.19108, lossy): `--teacache async --teacache-thresholds 0.1,0.2` runs reelflow with and
without it (interleaved, no reference) and reports under "teacache" the time ratios, the relative error and PSNR
against the no-TeaCache output, and the computed/skipped passes. `--merge` updates --out, keeping the rest:

    python benchmarks/generate.py --scenarios "" --teacache async --repeats 3 --merge
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class RssPeak:
    """Highest resident set size while active, sampled from /proc every few ms (CPU runs); `cpu`, its thread's
    own CPU time, grows with wall time, so runs report process time minus it (fair on a loaded host)."""

    def __init__(self, interval: float = 0.005):
        import threading
        self.interval, self.peak, self.done, self.cpu = interval, 0, threading.Event(), 0.0
        self.thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def _sample(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.rss())
            self.done.wait(self.interval)
        self.cpu = time.thread_time()

    def __enter__(self) -> RssPeak:
        self.baseline = self.peak = self.rss()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.rss())


def _run(side: str, ckpt: str, settings: dict, device: str, threads: int, out_npy: str, queue,
         count_flops: bool = False) -> None:
    import torch

    from models.checkpoint import load_pipeline_components
    from models.df_flops import count_dit_flops, time_dit_calls
    from models.generate_config import GenerateConfig

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    comps = load_pipeline_components(ckpt, dtype=dtype)
    for name in ("text_encoder", "transformer", "vae"):
        comps[name].to(device)
    cfg = GenerateConfig(**settings)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if device == "cuda" else 0
    account = count_dit_flops if count_flops else time_dit_calls  # counting FLOPs is slow: no DiT time then
    with RssPeak() as rss, account(comps["transformer"]) as dit:
        start, cpu_start = time.perf_counter(), time.process_time()
        frames, facts = _generate(side, comps, cfg)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    cpu_seconds -= rss.cpu  # the probe's thread has ended now
    np.save(out_npy, np.asarray(frames, dtype=np.float32))
    if device == "cuda":
        peak, working = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_allocated() - before
    else:
        peak, working = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss.peak - rss.baseline
    # peak: the whole process (imports and weights included); working: what generating added on top.
    facts = {**facts, **(dit.as_dict() if count_flops else {"dit_cpu_seconds": dit[0]})}
    queue.put({"seconds": seconds, "cpu_seconds": cpu_seconds, "probe_cpu_seconds": rss.cpu,
               "peak_memory_bytes": int(peak), "working_memory_bytes": int(working),
               "load_average_1min": os.getloadavg()[0], **facts})


def _generate(side: str, comps: dict, cfg) -> np.ndarray:
    import torch

    if side == "reference":
        from diffusers import SkyReelsV2DiffusionForcingPipeline

        pipe = SkyReelsV2DiffusionForcingPipeline(**comps)
        pipe.set_progress_bar_config(disable=True)
        torch.manual_seed(cfg.seed + 1)  # history re-noising stream, as reelflow seeds it
        return pipe(cfg.prompt, negative_prompt=cfg.negative_prompt, height=cfg.height, width=cfg.width,
                    num_frames=cfg.num_frames, num_inference_steps=cfg.num_inference_steps,
                    guidance_scale=cfg.guidance_scale, generator=torch.Generator().manual_seed(cfg.seed),
                    max_sequence_length=cfg.max_sequence_length, overlap_history=cfg.overlap_history,
                    addnoise_condition=cfg.addnoise_condition, base_num_frames=cfg.base_num_frames,
                    ar_step=cfg.ar_step, causal_block_size=cfg.causal_block_size, fps=cfg.fps).frames[0], {}
    from models.df_sampler import DFSampler

    return (sampler := DFSampler(comps)).generate(cfg).frames, sampler.stats


def run_side(side, ckpt, settings, device, threads, workdir, tag: str = "",
             count_flops: bool = False) -> tuple[dict, np.ndarray]:
    out_npy = str(Path(workdir) / f"{side}{tag}.npy")
    if IN_PROCESS:  # no interpreter start and imports per run (a loaded host); peak memory is then not per run
        import queue
        _run(side, ckpt, settings, device, threads, out_npy, box := queue.Queue(), count_flops)
        return box.get(), np.load(out_npy)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(side, ckpt, settings, device, threads, out_npy, queue, count_flops))
    proc.start()
    while True:  # a child that dies must not leave us waiting forever
        try:
            result = queue.get(timeout=5)
            break
        except Exception:
            if not proc.is_alive():
                raise RuntimeError(f"{side} process died with exit code {proc.exitcode}") from None
    proc.join()
    return result, np.load(out_npy)


IN_PROCESS = False  # --in-process
SCENARIOS = {"async": dict(ar_step=5, causal_block_size=5), "sync": dict(ar_step=0, causal_block_size=None)}


def summarize(runs: list[dict]) -> dict:
    keys = ("seconds", "cpu_seconds", "dit_cpu_seconds", "peak_memory_bytes", "working_memory_bytes")
    return {**{f"median_{k}": statistics.median(r[k] for r in runs) for k in keys}, "runs": runs}


def bench_scenario(name, ckpt, settings, args, workdir) -> dict:
    sides: dict[str, list[dict]] = {"reference": [], "reelflow": []}
    errors = []
    for rep in range(args.repeats):
        order = ["reference", "reelflow"] if rep % 2 == 0 else ["reelflow", "reference"]
        frames = {}
        for side in order:
            result, frames[side] = run_side(side, ckpt, settings, args.device, args.threads, workdir)
            sides[side].append(result)
            print(f"{name} #{rep} {side}: {json.dumps(result)}", flush=True)
        ref, ours = frames["reference"], frames["reelflow"]
        errors.append(float(np.linalg.norm(ours - ref) / np.linalg.norm(ref)))
    ref, ours = summarize(sides["reference"]), summarize(sides["reelflow"])
    flops = {}
    for side in ("reference", "reelflow"):  # untimed: the counter itself is slow
        counted, _ = run_side(side, ckpt, settings, args.device, args.threads, workdir, "_flops", True)
        flops[side] = {k: counted[k] for k in ("dit_flops", "dit_calls", "dit_flops_by_op")}
    return {
        "settings": settings, "reference": ref, "reelflow": ours, "dit_flops": flops,
        "dit_flops_ratio": flops["reelflow"]["dit_flops"] / flops["reference"]["dit_flops"],
        "speedup": ref["median_seconds"] / ours["median_seconds"],
        "cpu_speedup": ref["median_cpu_seconds"] / ours["median_cpu_seconds"],
        "dit_cpu_speedup": ref["median_dit_cpu_seconds"] / ours["median_dit_cpu_seconds"],
        "peak_memory_ratio": ours["median_peak_memory_bytes"] / ref["median_peak_memory_bytes"],
        "working_memory_ratio": ours["median_working_memory_bytes"] / ref["median_working_memory_bytes"],
        "relative_error": max(errors),
    }


def psnr(ours: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(ours, np.float64) - np.asarray(ref, np.float64)) ** 2))  # frames in [0, 1]
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def bench_teacache(name, ckpt, settings, thresholds, retention, args, workdir) -> dict:
    """reelflow with TeaCache at each threshold vs reelflow without it, interleaved; quality vs the latter."""
    variants = {"off": settings} | {f"threshold_{t:g}": {**settings, "teacache": True, "teacache_threshold": t,
                                                          "teacache_retention_steps": retention}
                                    for t in thresholds}
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    quality: dict[str, list[tuple[float, float]]] = {v: [] for v in variants if v != "off"}
    for rep in range(args.repeats):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        frames = {}
        for v in order:
            result, frames[v] = run_side("reelflow", ckpt, variants[v], args.device, args.threads, workdir, v)
            runs[v].append(result)
            print(f"teacache {name} #{rep} {v}: {json.dumps(result)}", flush=True)
        for v in quality:
            err = float(np.linalg.norm(frames[v] - frames["off"]) / np.linalg.norm(frames["off"]))
            quality[v].append((err, psnr(frames[v], frames["off"])))
    off = summarize(runs["off"])
    report = {"scenario": name, "settings": settings, "retention_steps": retention, "off": off, "thresholds": {}}
    for v in quality:
        on = summarize(runs[v])
        last = runs[v][-1]
        report["thresholds"][v] = {
            "threshold": variants[v]["teacache_threshold"], **on,
            "time_ratio": on["median_seconds"] / off["median_seconds"],
            "cpu_time_ratio": on["median_cpu_seconds"] / off["median_cpu_seconds"],
            "speedup": off["median_seconds"] / on["median_seconds"],
            "relative_error_vs_off": max(e for e, _ in quality[v]),
            "psnr_db_vs_off": min(p for _, p in quality[v]),
            "computed_passes": last.get("teacache_computed"), "skipped_passes": last.get("teacache_skipped"),
            "skip_fraction": last.get("teacache_skip_fraction"),
        }
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", choices=["tiny", "wan-1.3b"])
    parser.add_argument("--checkpoint", help="existing checkpoint folder (default: build one for --profile)")
    parser.add_argument("--out", default="benchmarks/results/generate.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--in-process", action="store_true", help="run every generation in this process")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per side; medians reported")
    parser.add_argument("--scenarios", default="async,sync", help=f"comma list of {sorted(SCENARIOS)}")
    for flag, default in (("--threads", 1), ("--height", 64), ("--width", 64), ("--base-num-frames", 97)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--steps", type=int, default=30, help="30: upstream generate_video_df.py's default")
    # ~4x the base, in whole causal blocks (else diffusers leaves the tail as noise, its issue 13609)
    parser.add_argument("--num-frames", type=int, default=397)
    parser.add_argument("--addnoise-condition", type=float, default=20.0)
    parser.add_argument("--teacache", default="", help="scenario to benchmark TeaCache on (e.g. async); none: skip")
    parser.add_argument("--teacache-thresholds", default="0.1,0.2", help="comma list of TeaCache thresholds")
    parser.add_argument("--teacache-retention", type=int, default=1, help="TeaCache retention steps")
    parser.add_argument("--merge", action="store_true", help="update --out, keeping what this run does not produce")
    args = parser.parse_args(argv)
    global IN_PROCESS
    IN_PROCESS = args.in_process

    common = dict(prompt="a golden retriever runs along the sea at sunset, cinematic tracking shot",
                  negative_prompt="blurry, static", height=args.height, width=args.width,
                  num_inference_steps=args.steps, guidance_scale=6.0, seed=0, max_sequence_length=64,
                  base_num_frames=args.base_num_frames, num_frames=args.num_frames, overlap_history=17,
                  addnoise_condition=args.addnoise_condition)
    report = {"profile": args.profile, "device": args.device, "threads": args.threads, "repeats": args.repeats,
              "host": platform.node(), "cpus": len(os.sched_getaffinity(0)), "in_process": args.in_process,
              "load_average_at_start": list(os.getloadavg()), "scenarios": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            from models.checkpoint import init_checkpoint

            ckpt = init_checkpoint(args.profile, str(Path(tmp) / "ckpt"))
        for name in filter(None, args.scenarios.split(",")):
            settings = {**common, **SCENARIOS[name]}
            report["scenarios"][name] = bench_scenario(name, ckpt, settings, args, tmp)
        if args.teacache:
            thresholds = [float(t) for t in args.teacache_thresholds.split(",")]
            meta = {k: report[k] for k in ("profile", "device", "threads", "repeats", "host", "cpus")}
            result = bench_teacache(args.teacache, ckpt, {**common, **SCENARIOS[args.teacache]}, thresholds,
                                    args.teacache_retention, args, tmp)
            report["teacache"] = {**meta, "scenarios": {args.teacache: result}}
    report["load_average_at_end"] = list(os.getloadavg())
    out = Path(args.out)
    if args.merge and out.exists():
        old = json.loads(out.read_text())
        scenarios = {**old.get("scenarios", {}), **report["scenarios"]}
        teacache = old.get("teacache", {}) | report.get("teacache", {})
        if "teacache" in old and "teacache" in report:  # keep other scenarios' TeaCache numbers
            teacache["scenarios"] = old["teacache"].get("scenarios", {}) | report["teacache"]["scenarios"]
        report = {**old, **(report if report["scenarios"] else {}), "scenarios": scenarios}
        if teacache:
            report["teacache"] = teacache
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    keys = ("speedup", "cpu_speedup", "dit_cpu_speedup", "dit_flops_ratio", "peak_memory_ratio",
            "working_memory_ratio", "relative_error", "time_ratio", "relative_error_vs_off", "psnr_db_vs_off")
    rows = dict(report["scenarios"]) | {f"teacache {n} {v}": r for n, tea in report.get(
        "teacache", {}).get("scenarios", {}).items() for v, r in tea["thresholds"].items()}
    print(json.dumps({n: {k: r[k] for k in keys if k in r} for n, r in rows.items()}, indent=2))
    return report


if __name__ == "__main__":
    main()
