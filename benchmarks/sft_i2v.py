"""sft-i2v (report section 5.5): first-frame reconstruction before vs after first-frame conditioning, one JSON.

    python benchmarks/sft_i2v.py --out benchmarks/results/sft_i2v.json     # 300 steps, ~2-4 min on 2 cores

A tiny full-sequence T2V DiT (random, as the tiny profile's) is widened into diffusers' I2V transformer
(models/i2v.py: step 0 = the T2V model) and trained by the stage's own loop and objective
(tasks/train/lib/loop.py + objective_i2v.py) on real VAE latents of synthetic clips: a smooth random
background and a coloured block moving in a random direction. The loss curve (whole clip and first latent
frame) is recorded. Then every clip's first frame (the VAE reconstruction the objective conditions on) is
handed to diffusers' SkyReelsV2ImageToVideoPipeline loaded from the written folder, before (step 0) and after
training, and the generated frame 0 is compared with the image: mean absolute error in [0, 1] and PSNR, on the
training clips and on held-out clips of the same kind no step saw.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def synthetic_clip(seed: int, frames: int, height: int, width: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: a smooth random colour field and a 16 px block moving 2-4 px per frame."""
    rng = np.random.default_rng(seed)
    field = torch.nn.functional.interpolate(torch.tensor(rng.random((1, 3, 3, 4)), dtype=torch.float32),
                                            size=(height, width), mode="bilinear", align_corners=False)[0]
    base = (field.permute(1, 2, 0).numpy() * 200 + 20).astype(np.uint8)
    colour = rng.integers(0, 256, 3)
    dy, dx = rng.integers(-3, 4, 2)
    y0, x0 = rng.integers(8, height - 24), rng.integers(8, width - 24)
    out = []
    for t in range(frames):
        img = base.copy()
        y, x = int(np.clip(y0 + t * dy, 0, height - 16)), int(np.clip(x0 + t * dx, 0, width - 16))
        img[y:y + 16, x:x + 16] = colour
        out.append(img)
    return np.stack(out)


def main(argv=None) -> dict:
    from benchmarks.memory_cache import MemoryCache
    from infra.config import load_config
    from infra.config_train import TrainStageConfig
    from models.checkpoint import init_checkpoint, load_pipeline_components
    from models.dit import load_transformer, write_checkpoint
    from models.i2v import widen_to_i2v
    from models.i2v_checkpoint import add_image_encoder, build_image_encoder, check_image_encoder
    from models.latent_encode import encode_text, encode_video
    from tasks.train.lib import i2v_eval
    from tasks.train.lib.engine import PlainEngine
    from tasks.train.lib.latent_cache import Sample
    from tasks.train.lib.loop import LoopSpec, train
    from tasks.train.lib.objective_i2v import FirstFrameConditioning

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clips", type=int, default=8, help="training clips")
    parser.add_argument("--held-out", type=int, default=4)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--sample-steps", type=int, default=10, help="denoising steps of the evaluation videos")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/sft_i2v.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config("tiny")
    tmp = Path(tempfile.mkdtemp(prefix="bench-i2v-"))
    base = init_checkpoint("tiny", str(tmp / "t2v"), seed=0, diffusion_forcing=False)
    encoder = build_image_encoder("tiny", str(tmp / "clip"))
    parts = load_pipeline_components(base)
    captions = ["a coloured block moves over a soft background"] * (args.clips + args.held_out)
    texts = encode_text(parts["tokenizer"], parts["text_encoder"], captions[:1], 512) * len(captions)
    samples = [Sample(f"c{i}", "video", "b", encode_video(parts["vae"], synthetic_clip(i, args.frames, args.height,
                                                                                        args.width)), texts[i], 24)
               for i in range(args.clips + args.held_out)]
    train_set = MemoryCache(samples[:args.clips])
    stage = TrainStageConfig(dataset="bench", resolution="540p", phase="post", objective="first_frame",
                             fps_embedding=False, steps=args.steps, lr=args.lr, checkpoint_every=10**9)
    res = cfg.train.resolutions["540p"].model_copy(update={"max_batch": 2})
    model = widen_to_i2v(load_transformer(base), check_image_encoder(encoder), seed=0)
    objective = FirstFrameConditioning(cfg.train, base, encoder)
    started = time.perf_counter()
    state = train(PlainEngine(model, stage), train_set, LoopSpec(stage, cfg.train, res, str(tmp / "steps"), 512),
                  objective=objective)
    train_s = time.perf_counter() - started
    after = write_checkpoint(base, model.eval(), str(tmp / "i2v"))
    add_image_encoder(after, encoder)
    before = i2v_eval.before_folder(base, encoder, str(tmp / "i2v-step0"))
    sample_cfg = cfg.train.sample.model_copy(update={"steps": args.sample_steps, "frames": args.frames})
    evaluation = {}
    for split, chosen in (("train", samples[:args.clips]), ("held_out", samples[args.clips:])):
        rows = [{"clip_id": s.clip_id, "kind": "video", "caption": captions[0]} for s in chosen]
        conds = i2v_eval.conditioning_samples(rows, MemoryCache(chosen), parts["vae"], len(chosen), args.height, args.width)
        evaluation[split] = {when: i2v_eval.first_frame_error(folder, conds, sample_cfg, args.height, args.width)
                             for when, folder in (("before", before), ("after", after))}
        for when in ("before", "after"):
            evaluation[split][when].pop("videos")
    history = state.history
    window = max(1, min(20, len(history) // 5))
    report = {
        "benchmark": "sft_i2v", "steps": args.steps, "lr": args.lr, "train_clips": args.clips,
        "held_out_clips": args.held_out, "size": [args.frames, args.height, args.width],
        "sample_steps": args.sample_steps, "guidance_scale": sample_cfg.guidance_scale, "threads": args.threads,
        "train_seconds": round(train_s, 1),
        "loss_first": statistics.mean(r["loss"] for r in history[:window]),
        "loss_last": statistics.mean(r["loss"] for r in history[-window:]),
        "first_frame_loss_first": statistics.mean(r["first_frame_loss"] for r in history[:window]),
        "first_frame_loss_last": statistics.mean(r["first_frame_loss"] for r in history[-window:]),
        "loss_curve": [{"step": r["step"], "loss": round(r["loss"], 5), "first_frame_loss": round(r["first_frame_loss"], 5)}
                       for r in history if r["step"] % 10 == 0 or r["step"] == 1],
        "first_frame": evaluation,
        "note": "before = the T2V DiT widened at step 0 (zero-initialised condition paths: it ignores the image by "
                "construction); errors are generated frame 0 vs the conditioning image, in [0, 1]",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("loss_curve",)}, indent=1))
    return report


if __name__ == "__main__":
    main()
