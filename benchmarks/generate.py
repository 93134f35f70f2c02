"""Long-video diffusion-forcing generation: diffusers reference vs reelflow, one run, one JSON.

    python benchmarks/generate.py --profile tiny --out benchmarks/results/generate_tiny.json

Each side runs in its own process (fair peak-memory numbers: max RSS, or CUDA peak on a GPU) on the same
checkpoint folder, prompt, seed and settings; the JSON holds wall times, speed-up, peak memory and the
relative error between the decoded videos. Settings default to issue 6's async target: ~4x the base
length, ar_step 5, causal_block_size 5.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _run(side: str, ckpt: str, settings: dict, device: str, threads: int, out_npy: str, queue) -> None:
    import torch

    from models.checkpoint import load_pipeline_components
    from models.generate_config import GenerateConfig

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    comps = load_pipeline_components(ckpt, dtype=dtype)
    for name in ("text_encoder", "transformer", "vae"):
        comps[name].to(device)
    cfg = GenerateConfig(**settings)
    start, cpu_start = time.perf_counter(), time.process_time()
    if side == "reference":
        from diffusers import SkyReelsV2DiffusionForcingPipeline

        pipe = SkyReelsV2DiffusionForcingPipeline(**comps)
        pipe.set_progress_bar_config(disable=True)
        torch.manual_seed(cfg.seed + 1)  # history re-noising stream, as reelflow seeds it
        frames = pipe(cfg.prompt, negative_prompt=cfg.negative_prompt, height=cfg.height, width=cfg.width,
                      num_frames=cfg.num_frames, num_inference_steps=cfg.num_inference_steps,
                      guidance_scale=cfg.guidance_scale, generator=torch.Generator().manual_seed(cfg.seed),
                      max_sequence_length=cfg.max_sequence_length, overlap_history=cfg.overlap_history,
                      addnoise_condition=cfg.addnoise_condition, base_num_frames=cfg.base_num_frames,
                      ar_step=cfg.ar_step, causal_block_size=cfg.causal_block_size, fps=cfg.fps).frames[0]
    else:
        from models.df_sampler import generate_df

        frames = generate_df(comps, cfg).frames
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    np.save(out_npy, frames.astype(np.float32))
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    queue.put({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_memory_bytes": int(peak)})


def run_side(side, ckpt, settings, device, threads, workdir) -> tuple[dict, np.ndarray]:
    ctx = mp.get_context("spawn")
    queue, out_npy = ctx.Queue(), str(Path(workdir) / f"{side}.npy")
    proc = ctx.Process(target=_run, args=(side, ckpt, settings, device, threads, out_npy, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result, np.load(out_npy)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", choices=["tiny", "wan-1.3b"])
    parser.add_argument("--checkpoint", help="existing checkpoint folder (default: build one for --profile)")
    parser.add_argument("--out", default="benchmarks/results/generate_tiny.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--base-num-frames", type=int, default=97)
    # ~4x the base length, rounded so every window is whole causal blocks (else the reference leaves the
    # tail frames of the last window as noise, diffusers issue 13609, and the error measures that instead)
    parser.add_argument("--num-frames", type=int, default=397)
    parser.add_argument("--ar-step", type=int, default=5)
    parser.add_argument("--causal-block-size", type=int, default=5)
    parser.add_argument("--addnoise-condition", type=float, default=20.0)
    args = parser.parse_args(argv)

    settings = dict(prompt="a golden retriever runs along the sea at sunset, cinematic tracking shot",
                    negative_prompt="blurry, static", height=args.height, width=args.width,
                    num_inference_steps=args.steps, guidance_scale=6.0, seed=0, max_sequence_length=64,
                    base_num_frames=args.base_num_frames,
                    num_frames=args.num_frames, overlap_history=17,
                    ar_step=args.ar_step, causal_block_size=args.causal_block_size,
                    addnoise_condition=args.addnoise_condition)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            from models.checkpoint import init_checkpoint

            ckpt = init_checkpoint(args.profile, str(Path(tmp) / "ckpt"))
        ref, ref_frames = run_side("reference", ckpt, settings, args.device, args.threads, tmp)
        ours, our_frames = run_side("reelflow", ckpt, settings, args.device, args.threads, tmp)
    err = float(np.linalg.norm(our_frames - ref_frames) / np.linalg.norm(ref_frames))
    report = {
        "profile": args.profile, "device": args.device, "threads": args.threads, "host": platform.node(),
        "settings": settings, "reference": ref, "reelflow": ours,
        "speedup": ref["seconds"] / ours["seconds"], "relative_error": err,
        # On a shared CPU host wall time follows other tenants' load; CPU time of the process does not.
        "cpu_speedup": ref["cpu_seconds"] / ours["cpu_seconds"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    keys = ("speedup", "cpu_speedup", "relative_error", "reference", "reelflow")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    return report


if __name__ == "__main__":
    main()
