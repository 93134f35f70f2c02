"""GPU training-step benchmark (issue 5's second target): the real Wan-1.3B DiT architecture (SkyReels-V2-DF-1.3B
config, random init), bf16, one 256p-class bucket, SDPA attention, optionally torch.compile.

    python benchmarks/train_gpu.py --profile wan-1.3b --frames 33 --height 256 --width 448 --compile \
        --out benchmarks/results/train_gpu.json

Reports step time (median of timed steps after warm-up), peak memory, model FLOPs per step (counted by
torch.utils.flop_counter on one forward+backward of the real shapes) and MFU = FLOPs / step time / measured
bf16 matmul peak (a large GEMM timed on the same GPU, not the datasheet). `--profile tiny` runs the same
code on CPU (fp32) so the script itself is tested where no GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import flow_matching as fm  # noqa: E402
from models.checkpoint import PROFILES  # noqa: E402


def measured_peak_flops(device: str, dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    """Achievable dense matmul FLOP/s on this device (the MFU denominator)."""
    if device == "cpu":
        n, reps = 1024, 5
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build(profile: str, device: str, dtype: torch.dtype, checkpointing: bool):
    from diffusers import SkyReelsV2Transformer3DModel

    torch.manual_seed(0)
    model = SkyReelsV2Transformer3DModel(**{**PROFILES[profile].transformer, "inject_sample_info": True})
    model = model.to(device=device, dtype=dtype).train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    return model


def step_fn(model, opt, x1, text, fps, autocast_dtype):
    gen = torch.Generator(device=x1.device).manual_seed(0)
    t = torch.sigmoid(torch.randn(x1.shape[0], generator=gen, device=x1.device))
    x0 = torch.randn(x1.shape, generator=gen, device=x1.device, dtype=x1.dtype)
    out = model(hidden_states=fm.interpolate(x1, x0, t), timestep=fm.model_timestep(t), encoder_hidden_states=text,
                fps=fps, return_dict=False)[0]
    loss = fm.loss(out, x1, x0)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="wan-1.3b", choices=sorted(PROFILES))
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=448)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--text-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/train_gpu.json")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = build(args.profile, device, dtype, args.checkpointing)
    cfg = model.config
    lat = (args.batch, cfg.in_channels, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    x1 = torch.randn(lat, device=device, dtype=dtype)
    text = torch.randn(args.batch, args.text_len, cfg.text_dim, device=device, dtype=dtype)
    fps = [1] * args.batch
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # one forward + backward of the real shapes
        out = model(hidden_states=x1, timestep=torch.full((args.batch,), 500.0, device=device),
                    encoder_hidden_states=text, fps=fps, return_dict=False)[0]
        out.float().pow(2).mean().backward()
    flops = counter.get_total_flops()
    opt.zero_grad(set_to_none=True)
    runner = torch.compile(model) if args.compile else model
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        _sync(device)
        start = time.perf_counter()
        step_fn(runner, opt, x1, text, fps, dtype)
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    peak = measured_peak_flops(device, dtype)
    tokens = lat[2] * (lat[3] // 2) * (lat[4] // 2) * args.batch
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "profile": args.profile, "dtype": str(dtype), "compile": args.compile, "checkpointing": args.checkpointing,
        "shape": {"frames": args.frames, "height": args.height, "width": args.width, "latent": list(lat),
                  "tokens": tokens, "text_len": args.text_len, "batch": args.batch},
        "params": sum(p.numel() for p in model.parameters()), "flops_per_step": flops, "step_seconds": step,
        "step_seconds_all": times, "tokens_per_s": tokens / step,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "measured_peak_flops": peak, "mfu": flops / step / peak, "target_mfu": 0.40,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "step_seconds_all"}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
