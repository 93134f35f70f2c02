"""Reward model on the pairs stage's automatic pairs (issue 7 target: held-out pairwise accuracy >= 0.9 on
the distortion-level ordering, tiny profile, after a short training run).

    python benchmarks/reward.py --out benchmarks/results/reward.json [--corpus-seed 1] [--films 8]
    python benchmarks/reward.py --pairs <published pairs stage folder>

Without ``--pairs`` the pairs come from the REAL pairs stage (``tasks.post.pairs.run``), as ``reelflow run``
makes them: real clips are the clean shots of synthetic films (``tasks.corpus.lib.films``, corpus seed
``--corpus-seed``), published as a ``D_540p_sft`` dataset view; the checkpoint is the tiny profile's
(``models.checkpoint.init_checkpoint``) with its FPS embedding removed as the 540p SFT removes it, published
as an ``sft-540p`` training stage. The pairs stage then regenerates each clip through that checkpoint
(V2V < I2V < T2V) and applies the frame-rate, noise and reversal defects. Stage ``reward`` runs on its
output unchanged (split by source clip, training, evaluation); the JSON is its evaluation plus the
headline subset, the per-defect numbers, the timing and the machine.

Headline ("distortion-level ordering"): held-out pairs among the real clip (level 0) and its V2V / I2V /
T2V regenerations (levels from ``DISTORTION_LEVEL``). The specific motion defects are reported apart:
``frame_rate`` (stutter: every other frame held), ``noise`` and ``reverse``. Time reversal of synthetic
footage (objects and cameras glide along paths with no arrow of time) leaves nothing to detect: a
reversed clip is as plausible as the original, so chance (0.5) is the honest expectation there.

Choices of the reward stage were tuned on corpus seed 1 (``--corpus-seed 1``, 54 clips, 14 held out) and
are reported on corpus seed 0 (the default), whose clips were never used to tune anything. On the tuning
seed, 200 steps each: mean pooling with lr 1e-3 (the old defaults) gave 0.977 on the headline subset;
mean + max pooling over the video tokens 1.000; with the head at 10x a backbone lr of 3e-3 (the new
defaults) 1.000 and the best defect numbers; adding flip/crop augmentation or 400 steps gained nothing.
None of them learnt real-vs-noise (held-out and train accuracy ~0.4-0.6): the model separates real
footage from the regenerations by contrast and smoothness, and noise adds the high-frequency energy real
footage has, so telling noise apart needs a feature the short run does not learn.
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
import pyarrow as pa  # noqa: E402

REPORT_SEED, TUNE_SEED = 0, 1
CLIP_FRAMES, FPS = 19, 24.0  # written clips: the pairs stage takes its 17 frames from their middle
CORPUS_SIZE = (224, 126)  # rendered size (width, height); the pairs stage crops/resizes to 540p-tiny
LEVELS = ("real", "v2v", "i2v", "t2v")  # the headline subset: the regeneration ladder
DEFECTS = ("frame_rate", "noise", "reverse")


def real_clips(films: int, seed: int) -> list[dict]:
    """One clip per clean shot of ``films`` synthetic films: shots that overlap a planted defect, or are
    too short, are skipped. Each: clip_id, (T, H, W, 3) RGB frames, a caption from the shot's truth."""
    from infra.config import CorpusConfig
    from tasks.corpus.lib.films import plan_video, render_video, video_id_for, video_seed_for

    width, height = CORPUS_SIZE
    cfg, clips = CorpusConfig(width=width, height=height, seed=seed), []
    for index in range(films):
        plan = plan_video(video_id_for(index), video_seed_for(seed, index), cfg)
        frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in render_video(plan)]
        for shot in plan.truth.shots:
            start = shot.start_frame + 4  # clear of the transition
            if shot.end_frame - start < CLIP_FRAMES or any(d.start_frame < start + CLIP_FRAMES and d.end_frame > start
                                                           for d in plan.truth.defects):
                continue
            clips.append({"clip_id": f"{plan.truth.video_id}_s{shot.index}",
                          "frames": np.stack(frames[start:start + CLIP_FRAMES]),
                          "caption": f"a {shot.category} moving through a synthetic scene"})
    return clips


def dataset_stage(ctx, folder: str, clips: list[dict]):
    """The clips as the ``D_540p_sft`` dataset view the pairs stage reads."""
    from infra.config import ClipsConfig
    from infra.stage import run_stage
    from infra.video import write_video

    rows = []
    for clip in clips:
        uri = os.path.join(folder, f"{clip['clip_id']}.mp4")
        write_video(clip["frames"], uri, FPS)
        h, w = clip["frames"].shape[1:3]
        rows.append({"clip_id": clip["clip_id"], "clip_uri": uri, "num_frames": len(clip["frames"]), "fps": FPS,
                     "width": w, "height": h, "crop_box": None, "caption_t2v": clip["caption"], "error": None,
                     "in_D_540p_sft": True})
    return run_stage(ctx, "D_540p_sft", ClipsConfig(), [], lambda work: pa.Table.from_pylist(rows),
                     key_extra=f"{len(rows)}:{rows[0]['clip_id'] if rows else ''}")


def checkpoint_stage(ctx, folder: str):
    """The tiny profile's checkpoint, FPS embedding removed (the 540p SFT's output), as an ``sft-540p`` stage."""
    from infra import storage
    from infra.checkpoints import CHECKPOINT
    from infra.config import ClipsConfig
    from infra.stage import run_stage
    from models.checkpoint import init_checkpoint
    from models.dit import load_transformer, without_fps_embedding, write_checkpoint

    base = init_checkpoint("tiny", os.path.join(folder, "tiny-init"))

    def body(work):
        write_checkpoint(base, without_fps_embedding(load_transformer(base)), storage.join(work.tmp_uri, CHECKPOINT))
        return pa.Table.from_pylist([{"step": 0}])

    return run_stage(ctx, "sft-540p", ClipsConfig(), [], body)


def build_pairs(ctx, films: int, seed: int, work: str) -> tuple:
    """Run the pairs stage on the clips of ``films`` synthetic films (corpus ``seed``) and a tiny checkpoint."""
    from tasks.post import pairs

    clips = real_clips(films, seed)
    dataset = dataset_stage(ctx, os.path.join(work, "clips"), clips)
    checkpoint = checkpoint_stage(ctx, work)
    cfg = ctx.cfg.post.pairs.model_copy(update={"max_clips": len(clips), "seed": seed})
    return pairs.run(ctx, cfg, ctx.cfg.audit, dataset, checkpoint), len(clips)


def subset_accuracy(table, keep, tie_margin: float) -> dict:
    """Held-out accuracy (ties excluded and included) over the pairs whose (a_desc, b_desc) ``keep`` accepts."""
    import torch

    from models.reward_loss import pairwise_accuracy
    from tasks.post.reward import LABELS

    part = table[[keep(a, b) for a, b in zip(table["a_desc"], table["b_desc"], strict=True)]]
    if part.empty:
        return {"num_pairs": 0}
    return pairwise_accuracy(torch.tensor(part["score_a"].values), torch.tensor(part["score_b"].values),
                             torch.tensor([LABELS[x] for x in part["label"]]), tie_margin)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/reward.json")
    parser.add_argument("--pairs", help="a published pairs stage folder; default: run the pairs stage here")
    parser.add_argument("--films", type=int, default=20, help="synthetic films whose clean shots are the real clips")
    parser.add_argument("--corpus-seed", type=int, default=REPORT_SEED,
                        help=f"corpus seed of the films ({TUNE_SEED}: tuning, {REPORT_SEED}: the reported numbers)")
    parser.add_argument("--work", help="working folder (default: a fresh temporary one); reruns resume stages")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="RewardConfig overrides, e.g. --set steps=300 --set lr=3e-3")
    args = parser.parse_args(argv)

    import pandas as pd
    import torch

    from infra.config import load_config
    from infra.manifest import load_success, read_table
    from infra.session import close_run, open_run
    from tasks.post import reward

    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="reelflow-bench-reward-"))
    cfg = load_config("tiny", [f"storage.run_root={work}/runs", f"state_dir={work}/state", "post.human_pairs_mode=off",
                               "audit.mode=off", "ray.num_cpus=1"])
    ctx = open_run(cfg, f"bench-reward-seed{args.corpus_seed}")
    started = time.perf_counter()
    if args.pairs:
        pairs, clips = load_success(args.pairs), None
    else:
        pairs, clips = build_pairs(ctx, args.films, args.corpus_seed, work)
    pairs_seconds = time.perf_counter() - started
    overrides = dict(item.split("=", 1) for item in args.set)
    reward_cfg = cfg.post.reward.model_validate({**cfg.post.reward.model_dump(), **overrides})
    started = time.perf_counter()
    manifest = reward.run(ctx, reward_cfg, pairs)
    stage_seconds = time.perf_counter() - started
    close_run(ctx, True)
    with open(os.path.join(manifest.uri, reward.EVALUATION), encoding="utf-8") as fh:
        evaluation = json.load(fh)
    table = read_table(manifest)
    held = table[(table["split"] == "holdout") & (table["kind"] == "auto")].merge(
        read_table(pairs)[["pair_id", "a_desc", "b_desc"]], on="pair_id")
    margin = reward_cfg.tie_margin
    headline = subset_accuracy(held, lambda a, b: a in LEVELS and b in LEVELS, margin)
    per_defect = {kind: {"vs_real": subset_accuracy(held, lambda a, b, k=kind: {a, b} == {"real", k}, margin),
                         "all_pairs_with_it": subset_accuracy(held, lambda a, b, k=kind: k in (a, b), margin)}
                  for kind in DEFECTS}
    pairs_table = read_table(pairs)
    held_clips = {g.removeprefix("clip:") for g in evaluation["holdout_groups"]}
    ladder = pairs_table[pairs_table["source_clip_id"].isin(held_clips) & pairs_table["a_desc"].isin(LEVELS)
                         & pairs_table["b_desc"].isin(LEVELS)]
    ladder_discarded = ladder[ladder["discarded"].fillna(False).astype(bool)]
    result = {
        "target": "held-out automatic pairs, distortion-level ordering (real < v2v < i2v < t2v), "
                  "ties excluded: accuracy >= 0.9",
        "target_met": (headline.get("accuracy_excl_ties") or 0) >= 0.9,
        "headline_levels_accuracy_excl_ties": headline.get("accuracy_excl_ties"),
        "headline_levels_accuracy_incl_ties": headline.get("accuracy_incl_ties"),
        "headline_levels_num_pairs": headline.get("num_pairs"),
        "headline_subset_discarded_by_pairs_stage": {
            "count": int(len(ladder_discarded)), "of": int(len(ladder)),
            "kinds": ladder_discarded.apply(lambda r: "|".join(sorted((r["a_desc"], r["b_desc"]))), axis=1)
            .value_counts().to_dict() if len(ladder_discarded) else {}},
        "holdout_clips": len(evaluation["holdout_groups"]),
        "per_defect": per_defect,
        "holdout_auto_accuracy_excl_ties": evaluation["holdout"]["auto"].get("accuracy_excl_ties"),
        "holdout_per_distortion": {k: v["accuracy_excl_ties"] for k, v in evaluation["holdout"]["per_distortion"].items()},
        "train_per_distortion": {k: v["accuracy_excl_ties"] for k, v in evaluation["train"]["per_distortion"].items()},
        "train_seconds": round(evaluation["train_seconds"], 1),
        "note": "Pairs from the real pairs stage (tiny checkpoint, FPS embedding removed; synthetic-corpus clips). "
                "Headline = pairs among real/v2v/i2v/t2v that the pairs stage kept: the tiny random checkpoint's "
                "v2v/i2v/t2v regenerations are nearly identical (it barely reads its input), so most regeneration-"
                "vs-regeneration pairs differ by < post.pairs.min_difference and are discarded there (counted in "
                "headline_subset_discarded_by_pairs_stage); the kept ladder is mostly real vs a regeneration. 'reverse' is undetectable in principle here: synthetic "
                "footage has no arrow of time (paths glide either way), so ~0.5 on real-vs-reverse is expected. "
                f"Choices tuned on corpus seed {TUNE_SEED}; these numbers are corpus seed {args.corpus_seed}.",
        "config": reward_cfg.model_dump(mode="json"),
        "pairs": args.pairs or {"films": args.films, "corpus_seed": args.corpus_seed, "clips": clips,
                                "pairs": int(len(pairs_table)),
                                "discarded": int(pd.Series(pairs_table["discarded"]).fillna(False).sum())},
        "pairs_seconds": round(pairs_seconds, 1), "stage_seconds": round(stage_seconds, 1),
        "command": "python benchmarks/reward.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__},
        "evaluation": evaluation,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("evaluation", "config")}, indent=1))
    return result


if __name__ == "__main__":
    main()
