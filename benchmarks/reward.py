"""Reward model on automatic pairs (issue 7 target: held-out pairwise accuracy >= 0.9, tiny profile).

    python benchmarks/reward.py --out benchmarks/results/reward.json [--pairs <pairs stage folder>]

Without ``--pairs`` the automatic pairs are built here, the way report section 3.4.1 builds them: real
clips (17 frames at the tiny profile's 540p size, cut from clean shots of synthetic films,
`tasks.corpus.generate`) against distorted versions of themselves. The non-generative distortions are the
report's, from the pairs stage (`models.distortions`): frame-rate manipulation (every other frame held
twice: judder), injected pixel noise, time reversal. The tiny DiT's regenerations would be unstructured
noise, so V2V / I2V / T2V are stood in for by corruptions of rising strength in the report's order (detail
blur and colour shift; plus a growing elastic warp of the subject; plus stronger blur, warp and per-frame
flicker), see `regenerate`. Pairs are planned as the pairs stage plans them
(`models.distortions.auto_pairs`): real vs each distortion, and every two distortions whose levels
(`infra.config_post.DISTORTION_LEVEL`) differ, the milder winning; A/B sides shuffled. They are published
as a ``pairs`` manifest with the stage's columns and stage ``reward`` runs on it unchanged (its own split
by source clip, training, evaluation); the JSON is its evaluation plus the timing and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

WIDTH, HEIGHT, FRAMES, FPS = 112, 64, 17, 24.0  # tiny profile: train.resolutions.540p, PairsConfig.frames
REGENERATIONS = ("v2v", "i2v", "t2v")
NOISE_STD = 0.08  # PairsConfig.noise_std


def real_clips(films: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(clip_id, (T, H, W, 3) RGB) from the clean shots of synthetic films: one clip per shot, skipping
    shots that overlap a planted defect or are too short."""
    from infra.config import CorpusConfig
    from tasks.corpus.generate import plan_video, render_video, video_id_for, video_seed_for

    cfg, clips = CorpusConfig(width=224, height=126, seed=seed), []
    for index in range(films):
        plan = plan_video(video_id_for(index), video_seed_for(seed, index), cfg)
        frames = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
                  for f in render_video(plan)]
        for shot in plan.truth.shots:
            start = shot.start_frame + 4  # clear of the transition
            if shot.end_frame - start < FRAMES or any(d.start_frame < start + FRAMES and d.end_frame > start
                                                      for d in plan.truth.defects):
                continue
            clips.append((f"{plan.truth.video_id}:{shot.index}", np.stack(frames[start:start + FRAMES])))
    return clips


def _warp(clip: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """A smooth random displacement field growing linearly in time: the subject bends more each frame."""
    h, w = clip.shape[1:3]
    field = [cv2.resize(rng.standard_normal((3, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
             for _ in range(2)]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for t, frame in enumerate(clip):
        k = amplitude * t / (len(clip) - 1)
        out.append(cv2.remap(frame, xs + k * field[0], ys + k * field[1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def regenerate(clip: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Stand-ins for the report's regenerations, mildest to strongest: V2V loses detail and shifts colour,
    I2V also deforms the subject, T2V blurs and deforms more and flickers frame to frame."""
    level = REGENERATIONS.index(kind) + 1
    shift = rng.uniform(-12, 12, size=3) * level
    out = _warp(clip, rng, 3.0 * (level - 1)) if level > 1 else clip
    out = np.stack([cv2.GaussianBlur(f, (0, 0), 0.8 * level) for f in out]).astype(np.float32) + shift
    if level == 3:
        out += rng.uniform(-20, 20, size=(len(out), 1, 1, 1))
    return np.clip(out, 0, 255).astype(np.uint8)


def build_pairs(out_dir: str, films: int, seed: int):
    """Write the videos and publish a ``pairs`` manifest with the pairs stage's columns."""
    import pyarrow as pa

    from infra.config_post import DISTORTION_LEVEL
    from infra.manifest import publish
    from infra.video import write_video
    from models.distortions import PIXEL_DISTORTIONS, auto_pairs, distort, level

    rng, rows = np.random.default_rng(seed), []
    for clip_id, clip in real_clips(films, seed):
        folder = os.path.join(out_dir, "videos", clip_id.replace(":", "_"))
        videos = {"real": clip, **{k: regenerate(clip, k, rng) for k in REGENERATIONS}}
        videos.update({k: (distort(k, clip / 255.0, NOISE_STD, rng) * 255).round().astype(np.uint8)
                       for k in PIXEL_DISTORTIONS})
        uris = {}
        for desc, frames in videos.items():
            uris[desc] = os.path.join(folder, f"{desc}.mp4")
            write_video(frames, uris[desc], FPS)
        for better, worse in auto_pairs(list(DISTORTION_LEVEL)):
            a, b = (better, worse) if rng.random() < 0.5 else (worse, better)
            rows.append({"pair_id": f"{clip_id}:{a}:{b}", "kind": "auto", "prompt": None, "source_clip_id": clip_id,
                         "a_uri": uris[a], "b_uri": uris[b], "a_desc": a, "b_desc": b, "a_level": level(a),
                         "b_level": level(b), "label": "a" if a == better else "b", "label_source": "auto",
                         "failure": None, "clip_similarity": None, "generator": None, "seed": seed,
                         "discarded": False, "discard_reason": None, "error": None})
    stage_dir = os.path.join(out_dir, "pairs")
    os.makedirs(stage_dir + ".tmp", exist_ok=True)
    return publish(pa.Table.from_pylist(rows), stage_dir + ".tmp", stage_dir, stage="pairs", config_hash="bench",
                   inputs=[], code_version="bench", started=time.time())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/reward.json")
    parser.add_argument("--pairs", help="a published pairs stage folder; default: build automatic pairs here")
    parser.add_argument("--films", type=int, default=6, help="synthetic films whose shots give the real clips")
    parser.add_argument("--steps", type=int, help="RewardConfig.steps (default: the config's)")
    parser.add_argument("--lr", type=float, help="RewardConfig.lr (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from infra.config import load_config
    from infra.manifest import load_success
    from infra.stage import StageContext
    from infra.tracking import Tracker
    from tasks import reward

    work = tempfile.mkdtemp(prefix="reelflow-bench-reward-")
    started = time.perf_counter()
    pairs = load_success(args.pairs) if args.pairs else build_pairs(work, args.films, args.seed)
    build_seconds = time.perf_counter() - started
    cfg = load_config("tiny", [f"storage.run_root={work}/runs", f"state_dir={work}/state"])
    overrides = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    reward_cfg = cfg.post.reward.model_copy(update=overrides)
    tracker = Tracker(f"sqlite:///{work}/mlflow.db", "bench", artifact_root=f"file://{work}/artifacts")
    ctx = StageContext("bench", os.path.join(work, "runs", "bench"), cfg, tracker, tracker.start_parent("bench", {}, {}))
    os.makedirs(ctx.run_uri, exist_ok=True)
    started = time.perf_counter()
    manifest = reward.run(ctx, reward_cfg, pairs)
    stage_seconds = time.perf_counter() - started
    with open(os.path.join(manifest.uri, reward.EVALUATION), encoding="utf-8") as fh:
        evaluation = json.load(fh)
    holdout = evaluation["holdout"]
    result = {
        "target": "held-out automatic pairs, ties excluded: accuracy >= 0.9",
        "target_met": (holdout["auto"].get("accuracy_excl_ties") or 0) >= 0.9,
        "holdout_auto_accuracy_excl_ties": holdout["auto"].get("accuracy_excl_ties"),
        "holdout_auto_accuracy_incl_ties": holdout["auto"].get("accuracy_incl_ties"),
        "holdout_auto_accuracy_excl_reverse": _accuracy_without(holdout["per_distortion"], "reverse"),
        "holdout_per_distortion": {k: v["accuracy_excl_ties"] for k, v in holdout["per_distortion"].items()},
        "train_per_distortion": {k: v["accuracy_excl_ties"] for k, v in evaluation["train"]["per_distortion"].items()},
        "config": reward_cfg.model_dump(mode="json"), "pairs": args.pairs or f"built: {args.films} films",
        "pairs_build_seconds": round(build_seconds, 1), "stage_seconds": round(stage_seconds, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__},
        "evaluation": evaluation,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "evaluation"}, indent=1))
    return result


def _accuracy_without(per_distortion: dict, kind: str) -> float | None:
    """Pair-weighted held-out accuracy (ties excluded) over every distortion kind but ``kind``."""
    parts = [v for k, v in per_distortion.items() if kind not in k.split("|")]
    total = sum(v["num_pairs"] - v["num_ties"] for v in parts)
    return sum(v["accuracy_excl_ties"] * (v["num_pairs"] - v["num_ties"]) for v in parts) / total if total else None


if __name__ == "__main__":
    main()
