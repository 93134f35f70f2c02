"""Near-duplicate groups through the vector index vs the all-pairs screen, on benchmark corpora.

``python -m benchmarks.dedup`` writes ``benchmarks/results/dedup.json``: for each synthetic corpus
seed (the filters benchmark's corpus: films with planted re-uploads, cut at the truth's shots), every
clip's copy-detection embedding (one decode per clip, the dedup filter alone: no OCR masks), then
``group_duplicates`` (index) and ``group_duplicates_exact`` (N x N screen) over the same embeddings.
Agreement = identical ``dup_group`` / ``dup_keep`` for every clip; ``score_dup`` compared too; and the
truth's planted near-duplicate clips found by each. ``--real-videos N`` adds the real-content set
(:mod:`benchmarks.realset`: photographs filmed and edited, with re-uploads), all its clips in one pool.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks.filters import build_clips
from infra.config_filters import ScoreConfig
from tasks.curate.filters.dedup import DedupFilter, group_duplicates, group_duplicates_exact
from tasks.curate.filters.frames import decode_clip


def corpus_agreement(videos: int, seed: int, work: str, paths: list[str] | None = None) -> dict:
    cfg = ScoreConfig()
    name = f"{seed}-real" if paths else str(seed)
    clips = build_clips(os.path.join(work, f"corpus-{name}"), os.path.join(work, f"clips-{name}"), videos, seed,
                        truth_cuts=True, paths=paths, photographs=paths is not None)
    flt = DedupFilter(cfg.dedup)
    embeddings = [flt(decode_clip(c["clip_uri"], int(c["num_frames"]), float(c["fps"]), cfg.decode))["dedup_embedding"]
                  for c in clips]
    ids, lengths = [c["clip_id"] for c in clips], [int(c["num_frames"]) for c in clips]
    started = time.perf_counter()
    exact = group_duplicates_exact(ids, embeddings, lengths, cfg.dedup)
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    indexed = group_duplicates(ids, embeddings, lengths, cfg.dedup)
    index_s = time.perf_counter() - started
    planted = [k for k, c in enumerate(clips) if "near_duplicate" in c["truth_kinds"]]

    def grouped(rows):
        sizes = {}
        for r in rows:
            sizes[r["dup_group"]] = sizes.get(r["dup_group"], 0) + 1
        return [k for k, r in enumerate(rows) if sizes[r["dup_group"]] > 1]

    diff = np.abs(np.array([r["score_dup"] for r in exact]) - np.array([r["score_dup"] for r in indexed]))
    return {
        "clips": len(clips), "planted_near_duplicate_clips": len(planted),
        "groups_identical": [(r["dup_group"], r["dup_keep"]) for r in exact]
        == [(r["dup_group"], r["dup_keep"]) for r in indexed],
        "clips_in_groups_exact": len(grouped(exact)), "clips_in_groups_index": len(grouped(indexed)),
        "planted_found_exact": len(set(planted) & set(grouped(exact))),
        "planted_found_index": len(set(planted) & set(grouped(indexed))),
        "score_dup_max_abs_diff": round(float(diff.max()), 6) if len(diff) else 0.0,
        "score_dup_identical_share": round(float((diff < 1e-9).mean()), 4) if len(diff) else 1.0,
        "exact_s": round(exact_s, 3), "index_s": round(index_s, 3),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 21])
    parser.add_argument("--real-videos", type=int, default=14, help="films of the real-content set (0: none)")
    parser.add_argument("--real-films", default=None,
                        help="folder of the real-content films (built there if missing; default: the realset cache)")
    parser.add_argument("--work", default="/tmp/reelflow-bench-dedup")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "dedup.json"))
    args = parser.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)
    corpora = {str(s): corpus_agreement(args.videos, s, args.work) for s in args.seeds}
    if args.real_videos:
        from benchmarks.realset.build import DEFAULT_CACHE, build_realset

        films = args.real_films or os.path.join(DEFAULT_CACHE, "films_seed0_640x360")
        paths = [os.path.join(films, f"real_{k:04d}.mp4") for k in range(args.real_videos)]
        if not all(os.path.exists(p.replace(".mp4", ".truth.json")) for p in paths):  # built once, then reused
            paths = build_realset(films, args.real_videos, 0, progress=False)
        corpora["real"] = corpus_agreement(args.real_videos, 0, args.work, paths)
    report = {"target": "index groups identical to the all-pairs screen on every corpus",
              "pass": all(c["groups_identical"] for c in corpora.values()), "videos": args.videos,
              "corpora": corpora, "host": platform.node(), "cpus": len(os.sched_getaffinity(0)),
              "load_1min": round(os.getloadavg()[0], 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
