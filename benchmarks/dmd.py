"""DMD distillation (report section 3.5): the 4-step generator against the 30-step teacher, one JSON.

    python benchmarks/dmd.py --out benchmarks/results/dmd.json     # 1000 iterations, lr 3e-5, ~4 min

The teacher is a tiny DiT first trained by flow matching (with 10% caption dropout, so guidance means
something) on a synthetic latent distribution with structure to distil: per caption, two modes +-a_c (a
channel vector broadcast over the video) plus a little noise. The generator and the fake score start as
copies of the teacher and are trained by the loop of stage distill-dmd (tasks/post/lib/dmd_train.py). On fixed
captions and seeds no training draw used, the generator (4 steps, unguided), the undistilled generator (the
same sampler before distillation) and the teacher at 4 steps (its UniPC, guided: the naive few-step baseline)
are compared with the teacher at 30 steps in fixed feature spaces: relative L2 of the latents and PSNR of the
decoded frames (seed for seed), and the per-channel means of the latents (the space the modes live in):
distance to the nearest of the caption's two modes and to the nearest teacher sample of the same caption.
Wall/CPU time per video, median, sampling alone and with the VAE decode (the same for all, so it caps the
end-to-end ratio at this size: ``tiny_decode`` shows it is convolution work, not per-call overhead; the
text states are computed once, outside every timing). ``wide_dit`` times the same sampling code, prompts
and seeds with a wider, deeper DiT (``WIDE_DIT``) and the same VAE: a size where the DiT dominates the time
as at real scale.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TRAIN_CAPTIONS = ["a man walks on a city street at night", "a red car drives fast in the rain",
                  "a dog runs in the forest", "a woman smiles, close up", "slow pan over the sea at sunset",
                  "a bird flies over a green field", "a child dances in the snow", "a cat looks at the camera"]
EVAL_CAPTIONS = 3  # the first captions, at seeds no training draw used


def synthetic_data(shape, gen: torch.Generator) -> torch.Tensor:
    """The modes: one unit-RMS channel vector a_c per caption, (captions, C)."""
    modes = torch.randn(len(TRAIN_CAPTIONS), shape[0], generator=gen)
    return modes / modes.pow(2).mean(1, keepdim=True).sqrt()


def train_teacher(model, texts, negative, modes, shape, steps: int, fps, gen: torch.Generator) -> list[float]:
    """Flow matching (models/flow_matching.py's convention) on x = +-a_c + 0.1 n, 10% of captions dropped."""
    from models import dmd

    opt, losses = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0), []
    model.train().requires_grad_(True)
    for _ in range(steps):
        rows = torch.randint(0, len(texts), (8,), generator=gen)
        sign = torch.randint(0, 2, (8,), generator=gen).float() * 2 - 1
        x = (sign[:, None] * modes[rows])[:, :, None, None, None] + 0.1 * torch.randn((8, *shape), generator=gen)
        text = torch.where(torch.rand(8, generator=gen)[:, None, None] < 0.1, negative, texts[rows])
        sigma, eps = torch.sigmoid(torch.randn(8, generator=gen)), torch.randn((8, *shape), generator=gen)
        out = dmd.velocity(model, dmd.noised(x, eps, sigma), sigma, text, None if fps is None else [fps] * 8)
        loss = dmd.fake_score_loss(out, x, eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def mode_measures(latents: dict, modes: torch.Tensor, captions: list[int]) -> dict:
    """Per method: mean distance (RMS over channels) of each sample's channel means to the nearest of its
    caption's two modes, and to the nearest teacher (30-step) sample of the same caption."""
    feats = {name: x.mean(dim=(2, 3, 4)) for name, x in latents.items()}
    cap = torch.tensor(captions)
    out = {}
    for name, f in feats.items():
        to_mode = torch.minimum((f - modes[cap]).pow(2).mean(1), (f + modes[cap]).pow(2).mean(1)).sqrt()
        same = cap[:, None] == cap[None, :]
        dist = (f[:, None] - feats["teacher"][None]).pow(2).mean(2).sqrt().masked_fill(~same, float("inf"))
        out[name] = {"to_nearest_mode": float(to_mode.mean()), "to_nearest_teacher_sample": float(dist.min(1)
                                                                                                  .values.mean())}
    return out


# A DiT size where the DiT dominates a video's time as it does at real scale (at the tiny size the VAE decode
# is ~85% of the generator's time: the tiny DiT has 29k weights over 140 tokens, while a 1.3B/14B DiT runs
# ~10^4-10^5 tokens through 30-40 wide layers per call and the Wan VAE decodes once per video).
WIDE_DIT = dict(num_attention_heads=4, attention_head_dim=64, ffn_dim=1024, num_layers=8)


def decode_overhead(vae, latents: torch.Tensor, repeats: int = 5) -> dict:
    """Where a decode's time goes: the whole call vs its fixed per-call parts (the streaming decoder's cache
    set-up and the fast-path patching of the VAE's modules), median seconds."""
    import statistics

    from models.df_vae import StreamingDecoder, decode, fast_vae

    def timed(fn) -> float:
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return statistics.median(out)

    def patch():
        with fast_vae(vae):
            pass

    with torch.no_grad():
        whole = timed(lambda: decode(vae, latents))
    fixed = timed(lambda: StreamingDecoder(vae)) + timed(patch)
    return {"decode_s": whole, "per_call_fixed_s": fixed, "per_call_fixed_share": fixed / whole}


def wide_speed(parts, states, shape, fps, cfg, seeds: int) -> dict:
    """The same timing as the tiny size's (``evaluate``: the teacher's UniPC over ``teacher_steps``, guided, vs
    the generator's K steps, each with and without the same VAE decode, same prompts and seeds) with a wider,
    deeper DiT (``WIDE_DIT``). Time per video depends on the architecture and the step counts, not on the
    weights, so the generator here is an untrained copy of the wide teacher (its quality is measured at the
    tiny size, where it is trained)."""
    from diffusers import SkyReelsV2Transformer3DModel

    from models import dmd
    from models.checkpoint import PROFILES
    from models.df_vae import decode
    from tasks.post.lib.dmd_train import Nets, Problem, evaluate

    torch.manual_seed(1)
    wide = SkyReelsV2Transformer3DModel(**{**PROFILES["tiny"].transformer, **WIDE_DIT}).eval().requires_grad_(False)
    problem = Problem(states[:-1], states[-1:], shape, fps, dmd.generator_sigmas(cfg.generator_steps, cfg.generator_shift))
    wide_cfg = cfg.model_copy(update={"eval_seeds": seeds})
    vae = parts["vae"]
    out = evaluate(Nets(wide, copy.deepcopy(wide), wide), problem, wide_cfg, parts["scheduler"],
                   lambda z: decode(vae, z), states[:EVAL_CAPTIONS])
    return {"transformer": {**PROFILES["tiny"].transformer, **WIDE_DIT},
            "parameters": sum(p.numel() for p in wide.parameters()), "samples": out["samples"],
            "seconds_per_video": out["seconds_per_video"],
            **{k: v for k, v in out.items() if k.startswith("speedup_")}}


def main(argv=None) -> dict:
    from infra.config_post import DMDConfig
    from models import dmd
    from models.checkpoint import init_checkpoint, load_pipeline_components
    from models.df_vae import decode
    from tasks.post.distill_dmd import text_states
    from tasks.post.lib.dmd_train import Nets, Problem, distill, evaluate, regression_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-5, help="generator and fake-score learning rate (1e-4 drifts)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--seeds", type=int, default=4, help="noise seeds per evaluation caption")
    parser.add_argument("--teacher-steps", type=int, default=400, help="flow-matching steps of the teacher")
    parser.add_argument("--regression-weight", type=float, default=0.25, help="DMD Eq. 10's lambda_reg; 0: DMD2")
    parser.add_argument("--text-len", type=int, default=512, help="umT5 tokens (the pipelines' default 512)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--wide-seeds", type=int, default=2, help="noise seeds per caption at the wide DiT size; "
                        "0: skip that size")
    parser.add_argument("--out", default="benchmarks/results/dmd.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = DMDConfig(iterations=args.iterations, lr_generator=args.lr, lr_fake=args.lr, batch_size=2,
                    regression_weight=args.regression_weight, regression_pairs=8,
                    eval_seeds=args.seeds, frames=args.frames, checkpoint_every=10**9)
    report = {"settings": {**cfg.model_dump(mode="json"), "height": args.height, "width": args.width,
                           "threads": args.threads, "text_len": args.text_len, "captions": TRAIN_CAPTIONS, "eval_captions": EVAL_CAPTIONS,
                           "teacher_training_steps": args.teacher_steps},
              "cpus": len(os.sched_getaffinity(0)), "load_average_at_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        parts = load_pipeline_components(init_checkpoint("tiny", str(Path(tmp) / "ckpt")))
        teacher, gen = parts["transformer"], torch.Generator().manual_seed(0)
        with torch.no_grad():
            states = text_states(parts, TRAIN_CAPTIONS + [""], args.text_len)
        shape = (teacher.config.in_channels, 1 + (args.frames - 1) // 4, args.height // 8, args.width // 8)
        fps = 1 if teacher.config.inject_sample_info else None
        modes = synthetic_data(shape, gen)
        teacher_losses = train_teacher(teacher, states[:-1], states[-1:], modes, shape, args.teacher_steps, fps, gen)
        teacher.eval().requires_grad_(False)
        problem = Problem(states[:-1], states[-1:], shape, fps,
                          dmd.generator_sigmas(cfg.generator_steps, cfg.generator_shift))
        nets = Nets(teacher, copy.deepcopy(teacher), copy.deepcopy(teacher))
        vae, evaluation = parts["vae"], states[:EVAL_CAPTIONS]
        captions = [c for c in range(EVAL_CAPTIONS) for _ in range(args.seeds)]
        before = evaluate(nets, problem, cfg, parts["scheduler"], lambda z: decode(vae, z), evaluation, True)
        start, cpu = time.perf_counter(), time.process_time()
        if cfg.regression_weight > 0:
            problem.pairs = regression_pairs(nets, problem, cfg, parts["scheduler"])
        history = distill(nets, problem, cfg, tmp)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        after = evaluate(nets, problem, cfg, parts["scheduler"], lambda z: decode(vae, z), evaluation, True)
        overhead = decode_overhead(vae, torch.randn((1, *shape), generator=torch.Generator().manual_seed(3)))
        wide = wide_speed(parts, states, shape, fps, cfg, args.wide_seeds) if args.wide_seeds else None
    modes_before = mode_measures(before.pop("latents"), modes, captions)
    modes_after = mode_measures(after.pop("latents"), modes, captions)
    fake = [r["fake_loss"] for r in history]
    report.update({
        "teacher_flow_matching_loss": {"first10": sum(teacher_losses[:10]) / 10,
                                       "last10": sum(teacher_losses[-10:]) / 10},
        "training": {"iterations": len(history), "generator_updates": sum("generator_loss" in r for r in history),
                     "seconds": seconds, "cpu_seconds": cpu_seconds, "fake_loss_first10": sum(fake[:10]) / 10,
                     "fake_loss_last10": sum(fake[-10:]) / 10},
        "undistilled": {**before["generator"], **modes_before["generator"]},
        "generator": {**after["generator"], **modes_after["generator"]},
        "teacher_4_steps": {**after["teacher_few"], **modes_after["teacher_few"]},
        "teacher_30_steps": modes_after["teacher"],
        "seconds_per_video": after["seconds_per_video"],
        **{k: v for k, v in after.items() if k.startswith("speedup_")}, "samples": after["samples"],
        "tiny_decode": overhead,
        "wide_dit": wide,
        "load_average_at_end": list(os.getloadavg())})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    keys = ("undistilled", "generator", "teacher_4_steps", "teacher_30_steps", "teacher_flow_matching_loss")
    print(json.dumps({**{k: report[k] for k in keys}, **{k: v for k, v in report.items() if k.startswith("speedup")},
                      "tiny_decode": overhead, "wide_dit": wide,
                      "training": report["training"]}, indent=2))
    return report


if __name__ == "__main__":
    main()
