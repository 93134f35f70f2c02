"""sft-camera (report section 5.5, Camera Director): camera-label balance, and the camera expert's agreement
between a prompt's camera motion and the generated video's, before vs after the camera SFT. One JSON.

    python benchmarks/sft_camera.py --out benchmarks/results/sft_camera.json     # ~5 min on 2 cores

A. Balance. 2,000 camera labels drawn as the synthetic corpus draws its shots' cameras
   (tasks/corpus/lib/camera.py: speed classes and axis weights of its planner, labels measured from the
   rendered homographies), classed and balanced by models/camera_balance.py (stage D_camera's code, with
   concept balancing's plan_counts / assign_repeats): shares of classes, speed classes and axis moves before
   and after, and the largest / smallest class share.
B. Agreement. Clips rendered with the corpus's camera paths over a random texture are labelled by the camera
   expert (models/camera_motion.py, the caption stage's sub-expert), captioned "camera: <label>" and balanced
   as in A; a tiny diffusion-forcing DiT (random, as the tiny profile's final checkpoint) is trained on their
   VAE latents by the stage's loop and objective. For one prompt per camera class and fixed seeds, videos are
   generated before and after (diffusers' DF pipeline) and labelled by the same expert: agreement = the
   generated video's class equals the prompt's, and the share of the 6 axes + speed that match.
   With the tiny random VAE (whose decoder renders nearly the same picture for every latent) the expert
   mostly sees no motion, so no effect is expected at this scale; the number is recorded as measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
FPS = 24


def corpus_labels(n: int, seed: int, width: int, height: int, frames: int) -> list[tuple]:
    """(camera path, truth label dict) as the corpus plans its shots' cameras."""
    from tasks.corpus.lib.camera import camera_truth, plan_camera

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cam = plan_camera(rng, width, height, (width * 3, height * 3), FPS, frames)
        out.append((cam, camera_truth(cam).model_dump()))
    return out


def render(cam, texture: np.ndarray, frames: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: the texture seen through the camera path (frame pixel -> canvas homography)."""
    import cv2

    return np.stack([cv2.warpPerspective(texture, cam.homography(t), (cam.width, cam.height),
                                         flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                     for t in range(frames)])


def texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A canvas with structure at several scales (what optical flow needs)."""
    import cv2

    out = np.zeros((height, width, 3), np.float32)
    for scale in (4, 16, 64):
        small = rng.random((max(2, height // scale), max(2, width // scale), 3)).astype(np.float32)
        out += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    out -= out.min()
    return (out / out.max() * 255).astype(np.uint8)


def expert(frames: np.ndarray) -> dict:
    from models.camera_motion import estimate_motion

    return estimate_motion(list(frames), FPS).label()


def agreement(prompt: dict, generated: dict) -> tuple[bool, float]:
    from models.camera_balance import AXES, camera_class

    same = camera_class(prompt) == camera_class(generated)
    keys = (*AXES, "speed")
    return same, sum(str(prompt.get(k)) == str(generated.get(k)) for k in keys) / len(keys)


def main(argv=None) -> dict:
    from benchmarks.memory_cache import MemoryCache
    from infra.config import load_config
    from infra.config_train import TrainStageConfig
    from models.camera_balance import balance_camera, camera_class, imbalance
    from models.caption_schema import CameraMotion
    from models.checkpoint import init_checkpoint, load_pipeline_components
    from models.dit import load_transformer, without_fps_embedding
    from models.latent_encode import encode_text, encode_video
    from tasks.train.lib.engine import PlainEngine
    from tasks.train.lib.latent_cache import Sample
    from tasks.train.lib.loop import LoopSpec, train
    from tasks.train.lib.objective_forcing import DiffusionForcing
    from tasks.train.lib.samples import reference_pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=2000, help="labels of part A")
    parser.add_argument("--clips", type=int, default=24, help="rendered clips of part B")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, default=2, help="generation seeds per prompt")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=112)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--keep-fraction", type=float, default=0.5)
    parser.add_argument("--max-repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/sft_camera.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    # A. balance of the corpus planner's labels
    labels = [label for _, label in corpus_labels(args.labels, 0, args.width, args.height, args.frames)]
    _, summary = balance_camera([f"l{i}" for i in range(len(labels))], labels, args.keep_fraction, args.max_repeat)
    balance = {"labels": len(labels), "samples_after": summary["samples_after"], "before": summary["before"],
               "after": summary["after"], "class_imbalance_before": imbalance(summary["before"]["class"]),
               "class_imbalance_after": imbalance(summary["after"]["class"]), "classes": len(summary["plan"])}

    # B. rendered clips, labelled by the expert, balanced, trained on
    rng = np.random.default_rng(1)
    clips, motions = [], []
    for cam, _ in corpus_labels(args.clips, 1, args.width, args.height, args.frames):
        frames = render(cam, texture(rng, args.width * 3, args.height * 3), args.frames)
        clips.append(frames)
        motions.append(expert(frames))
    repeats, pool_summary = balance_camera([f"c{i}" for i in range(len(clips))], motions, args.keep_fraction,
                                           args.max_repeat)
    tmp = Path(tempfile.mkdtemp(prefix="bench-camera-"))
    base = init_checkpoint("tiny", str(tmp / "df"), seed=0, diffusion_forcing=True)
    parts = load_pipeline_components(base)
    captions = [f"camera: {CameraMotion(**m).describe()}" for m in motions]
    texts = dict(zip(sorted(set(captions)), encode_text(parts["tokenizer"], parts["text_encoder"],
                                                        sorted(set(captions)), 512), strict=True))
    samples = []
    for i, (frames, caption, k) in enumerate(zip(clips, captions, repeats, strict=True)):
        if k:
            sample = Sample(f"c{i}", "video", "b", encode_video(parts["vae"], frames), texts[caption], FPS)
            samples += [sample] * k
    cfg = load_config("tiny")
    stage = TrainStageConfig(dataset="D_camera", resolution="540p", phase="post", objective="diffusion_forcing",
                             fps_embedding=False, steps=args.steps, lr=args.lr, checkpoint_every=10**9)
    res = cfg.train.resolutions["540p"].model_copy(update={"max_batch": 2})
    before = without_fps_embedding(load_transformer(base)).eval()
    model = without_fps_embedding(load_transformer(base))
    state = train(PlainEngine(model, stage), MemoryCache(samples), LoopSpec(stage, cfg.train, res, str(tmp / "steps"), 512),
                  objective=DiffusionForcing(cfg.train))
    prompts = {}
    for m, caption in zip(motions, captions, strict=True):
        prompts.setdefault(camera_class(m), (caption, m))
    frozen = {k: v for k, v in parts.items() if k != "transformer"}
    evaluation = {}
    for when, dit in (("before", before), ("after", model.eval())):
        pipe, extra = reference_pipeline(dit, frozen, True, args.frames, FPS)
        rows = []
        for cls, (caption, truth) in sorted(prompts.items()):
            for seed in range(args.seeds):
                with torch.no_grad():
                    video = pipe(caption, height=args.height, width=args.width, num_frames=args.frames,
                                 num_inference_steps=args.sample_steps, guidance_scale=5.0,
                                 generator=torch.Generator().manual_seed(1000 + seed), output_type="np",
                                 **extra).frames[0]
                got = expert((np.clip(video, 0, 1) * 255).round().astype(np.uint8))
                same, axes = agreement(truth, got)
                rows.append({"prompt_class": cls, "seed": seed, "generated_class": camera_class(got),
                             "class_agrees": same, "axis_speed_agreement": axes})
        evaluation[when] = {"class_agreement": float(np.mean([r["class_agrees"] for r in rows])),
                            "axis_speed_agreement": float(np.mean([r["axis_speed_agreement"] for r in rows])),
                            "generated_static_share": float(np.mean([r["generated_class"] == "static" for r in rows])),
                            "videos": rows}
    history = state.history
    report = {
        "benchmark": "sft_camera", "threads": args.threads, "seconds": round(time.perf_counter() - started, 1),
        "balance": balance,
        "sft": {"clips": len(clips), "samples_after_balance": len(samples), "steps": args.steps, "lr": args.lr,
                "size": [args.frames, args.height, args.width], "sample_steps": args.sample_steps,
                "pool_before": pool_summary["before"]["class"], "pool_after": pool_summary["after"]["class"],
                "loss_first10": float(np.mean([r["loss"] for r in history[:10]])),
                "loss_last10": float(np.mean([r["loss"] for r in history[-10:]])),
                "prompts": len(prompts), "seeds": args.seeds},
        "agreement": evaluation,
        "note": "tiny random DiT and VAE: the VAE decoder renders nearly one picture for every latent, so the camera "
                "expert sees little motion in generated videos; agreement here checks the measurement, not the model",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    brief = {k: v for k, v in report.items() if k != "agreement"}
    brief["agreement"] = {w: {k: v for k, v in e.items() if k != "videos"} for w, e in evaluation.items()}
    print(json.dumps(brief, indent=1))
    return report


if __name__ == "__main__":
    main()
