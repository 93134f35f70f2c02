"""Iterative Flow-DPO, three rounds of stage dpo-k on the tiny profile (issue 7 target: the chosen-vs-rejected
implicit reward margin increases in every round).

    python benchmarks/dpo.py --out benchmarks/results/dpo.json [--reward <published reward stage folder>]

Inputs as ``reelflow run`` hands them to the rounds: the tiny profile's checkpoint with its FPS embedding
removed (the 540p SFT's output) published as an ``sft-540p`` stage, a ``D_540p_sft`` view of captioned clips
(captions only: a round prompts with them), and a reward stage: ``--reward`` (a published ``reward`` stage
folder) or, by default, a tiny random reward model published as one. Each round runs with the profile's
``post.dpo`` config, unchanged. Per round: the margin on the round's own pairs at the start and at the end
(the same t/noise draws; at the start the policy is the reference, so 0), the per-step margins of the first
and last step, accuracy, reward-model scores before/after, and the phase timings.
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

CAPTIONS = ("a man walks on a city street at night, slow pan", "a red car drives fast on a wet road",
            "a dog runs in the forest, tracking shot", "a woman smiles, close up, warm light",
            "waves roll onto the beach at sunset, static camera", "a bird flies over a green field",
            "a child dances in the rain", "a cat looks out of the window, soft light")
KEYS = ("margin_start", "margin_end", "margin_first_step", "margin_last_step", "accuracy_start", "accuracy_end",
        "first_loss", "final_loss", "rm_score_before", "rm_score_after", "rm_score_chosen", "rm_score_rejected",
        "seconds_pairs", "seconds_training", "seconds_after")


def inputs(ctx, folder: str, reward_uri: str | None):
    """(sft-540p checkpoint stage, D_540p_sft view, reward stage) as the post-training flow hands them over."""
    import pyarrow as pa

    from infra import manifest as mf
    from infra.checkpoints import CHECKPOINT
    from infra.config import ClipsConfig
    from infra.stage import run_stage
    from models.checkpoint import init_checkpoint
    from models.dit import load_transformer, without_fps_embedding, write_checkpoint
    from models.reward_model import build_tiny_reward_model
    from tasks.post.reward import MODEL_DIR

    base = init_checkpoint("tiny", os.path.join(folder, "tiny-init"))

    def sft(work):
        write_checkpoint(base, without_fps_embedding(load_transformer(base)), os.path.join(work.tmp_uri, CHECKPOINT))
        return pa.Table.from_pylist([{"step": 0}])

    def dataset(work):
        return pa.Table.from_pylist([{"clip_id": f"c{i}", "caption_t2v": c, "error": None, "in_D_540p_sft": True}
                                     for i, c in enumerate(CAPTIONS)])

    def reward(work):
        build_tiny_reward_model(os.path.join(folder, "tiny-reward")).save(os.path.join(work.tmp_uri, MODEL_DIR))
        return pa.Table.from_pylist([{"pair_id": "none"}])

    published = mf.load_success(reward_uri) if reward_uri else run_stage(ctx, "reward", ClipsConfig(), [], reward)
    if published is None:
        raise SystemExit(f"--reward {reward_uri}: no published stage there (_SUCCESS.json)")
    return (run_stage(ctx, "sft-540p", ClipsConfig(), [], sft),
            run_stage(ctx, "D_540p_sft", ClipsConfig(), [], dataset), published)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/dpo.json")
    parser.add_argument("--reward", default=None, help="a published reward stage folder (default: tiny random)")
    args = parser.parse_args(argv)

    import torch

    from infra.config import load_config
    from infra.stage import StageContext
    from infra.tracking import Tracker
    from tasks.post import dpo

    with tempfile.TemporaryDirectory(prefix="reelflow-dpo-bench-") as tmp:
        cfg = load_config("tiny", [f"storage.run_root={tmp}/runs", f"state_dir={tmp}/state"])
        tracker = Tracker(f"sqlite:///{tmp}/mlflow.db", "bench", artifact_root=f"file://{tmp}/art")
        run_uri = os.path.join(tmp, "runs", "bench")
        os.makedirs(run_uri)
        ctx = StageContext("bench", run_uri, cfg, tracker, tracker.start_parent("bench", {}, {}), "bench")
        current, dataset, reward = inputs(ctx, tmp, args.reward)
        rounds = []
        for k in range(1, cfg.post.dpo.rounds + 1):
            started = time.perf_counter()
            current = dpo.run(ctx, cfg.post.dpo, k, current, reward, dataset)
            rounds.append({"round": k, "seconds": round(time.perf_counter() - started, 1),
                           **{key: current.stats[key] for key in KEYS}})
    result = {
        "target": "implicit reward margin (round's pairs, same t/noise draws) increases in every round",
        "passed": all(r["margin_end"] > r["margin_start"] for r in rounds),
        "rounds": rounds,
        "reward_model": args.reward or "tiny random (untrained): its scores before/after say nothing",
        "config": cfg.post.dpo.model_dump(mode="json"),
        "command": "python benchmarks/dpo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))
    return result


if __name__ == "__main__":
    main()
