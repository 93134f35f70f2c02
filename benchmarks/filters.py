"""Benchmark of the score stage against the synthetic corpus truth (issue 3, Targets).

    python -m benchmarks.filters [--videos 40] [--out benchmarks/results/filters.json]

corpus -> ingest (per-item ``probe_source``) -> shots (``tasks.curate.segment``'s per-video function, as the
pipeline cuts them; ``--truth-shots`` uses the truth's shot ranges instead) -> ``cut_clips`` -> the
score stage's per-clip function, in this process (one thread: the machine is shared). Measured:
- per planted defect kind, precision and recall of the matching filter's decision at
  ``default_thresholds()``. A clip HAS a defect when a truth defect covers at least
  ``MIN_OVERLAP`` of the clip's frames (or, for short temporal defects, lies wholly inside it).
  Near-duplicates: a clip has one when it is mostly a copied shot (``duplicate_of``) or the copied
  original AND some other clip is mostly the other one (a duplicate needs its partner in the pool).
  Real-content set only (photographs filmed): a still camera on a photograph is a still picture from
  end to end (report section 3.1 "static screen"), kind ``still_picture``, the strict profile's
  ``too_static`` rule's to catch (synthetic still-camera shots have moving subjects); near-duplicates
  are grouped within each film: the set's 48 photographs recur across its films (155 of 161 shots of
  seed 0 share theirs with another film, framed alike), which its truth does not record.
- clean clips (no planted defect kind) wrongly rejected by the strict profile (``configs/filters/540p.yaml``
  as ``tasks.curate.datasets`` applies it to the pool at the tiny pipeline profile), with the rules responsible;
- throughput per filter (clips/s of its compute alone, and with its own decode), the shared-decode
  score stage's clips/s, and the speed-up: sum over filters of (decode + filter) / (decode + all).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import time

import pandas as pd

from infra.config import ClipsConfig, CorpusConfig, IngestConfig, SegmentConfig
from infra.config_datasets import load_columns, load_profile
from infra.config_filters import ScoreConfig
from tasks.corpus import generate_corpus, load_truth
from tasks.corpus.lib.truth import VideoTruth
from tasks.curate.clips import cut_clips
from tasks.curate.datasets import apply_profile
from tasks.curate.filters import BasicFilter, build_filters, default_thresholds, rejects
from tasks.curate.filters.dedup import write_side_store
from tasks.curate.filters.frames import decode_clip
from tasks.curate.filters.quality import VTSSFilter
from tasks.curate.ingest import probe_source
from tasks.curate.score import add_duplicate_groups, score_clip
from tasks.curate.segment import SegmentWorker

DEVELOPED_ON = {"synthetic": "corpus seed 0, films 0-29", "real": "real set seed 0, films real_0000-real_0013 (640x360)"}  # parameters chosen on these; other seeds: held out
MIN_OVERLAP = 0.5  # share of the clip's frames a footage/text defect must cover
TEMPORAL = {"black", "frozen"}  # short by nature: any overlap of >= 2 frames counts
# planted kind -> the filter decision that should catch it
KIND_FILTER = {
    "black": "black", "frozen": "static", "mosaic": "mosaic", "subtitle": "text", "caption_text": "text",
    "letterbox": "border", "pillarbox": "border", "logo": "logo", "sticker": "sticker",
    "near_duplicate": "dedup", "blur": "iqa", "noise": "iqa", "blocking": "iqa", "still_picture": "too_static",
}
# the groups with a >= 0.90 target; text = subtitle or caption_text, borders = either bar
TARGET_GROUPS = {"black": {"black"}, "static": {"frozen"}, "mosaic": {"mosaic"},
                 "text": {"subtitle", "caption_text"}, "border": {"letterbox", "pillarbox"},
                 "logo": {"logo"}, "dedup": {"near_duplicate"}}


def truth_shots(truth: VideoTruth, source: dict) -> list[dict]:
    """Segment-table rows from the truth: boundary kinds from the truth's transitions."""
    cuts = {t.start_frame for t in truth.transitions if t.kind == "cut"}
    rows = []
    for shot in truth.shots:
        rows.append({
            "shot_id": f"{source['source_id']}:{shot.index}", "source_id": source["source_id"],
            "start_frame": shot.start_frame, "end_frame": shot.end_frame, "fps": source["fps"],
            "boundary_in_kind": "cut" if shot.start_frame in cuts or shot.start_frame == 0 else "gradual",
            "boundary_out_kind": "cut" if shot.end_frame in cuts or shot.end_frame == truth.num_frames else "gradual",
            "error": None,
        })
    return rows


def build_clips(corpus_dir: str, clips_dir: str, videos: int, seed: int, truth_cuts: bool = False,
                paths: list[str] | None = None, photographs: bool = False) -> list[dict]:
    """Generate (or reuse) the corpus, segment it (or take the truth's shots) and cut its clips;
    returns clip rows with ``truth_kinds``. ``paths``: videos with truth sidecars already built
    (the real-content set) instead of the synthetic corpus; ``photographs``: the films show photographs
    (a still camera's clip is a still picture)."""
    if paths is None:
        cfg = CorpusConfig(videos=videos, seed=seed, defect_rate=0.6, workers=1)
        paths = [os.path.join(corpus_dir, f"film_{i:04d}.mp4") for i in range(videos)]
        if not all(os.path.exists(p.replace(".mp4", ".truth.json")) for p in paths):
            generate_corpus(corpus_dir, cfg, progress=False)
    os.makedirs(clips_dir, exist_ok=True)
    segmenter = None if truth_cuts else SegmentWorker(SegmentConfig())
    clips = []
    for path in paths:
        source = probe_source(path, IngestConfig())
        truth = load_truth(path)
        shots = truth_shots(truth, source) if truth_cuts else segmenter(source)
        rows = [r for r in cut_clips(source, shots, ClipsConfig(), clips_dir, clips_dir) if r["error"] is None]
        duplicates = near_duplicate_clips(truth, rows)
        for k, row in enumerate(rows):
            shot = main_shot(truth, row)
            still = photographs and shot is not None and truth.shots[shot].camera.speed == "static"
            row["truth_kinds"] = sorted(clip_truth(truth, row) | ({"near_duplicate"} if k in duplicates else set())
                                        | ({"still_picture"} if still else set()))
            clips.append(row)
    return clips


def clip_truth(truth: VideoTruth, clip: dict) -> set[str]:
    """The planted defect kinds a clip has (see the module docstring). Coverage is per kind, over
    the union of its defects: consecutive subtitle lines together cover a clip."""
    start, end = clip["start_frame"], clip["end_frame"]
    covered: dict[str, set[int]] = {}
    for d in truth.defects:
        covered.setdefault(d.kind, set()).update(range(max(start, d.start_frame), min(end, d.end_frame)))
    kinds = {k for k, frames in covered.items()
             if len(frames) >= (2 if k in TEMPORAL else MIN_OVERLAP * (end - start))}
    return kinds


def main_shot(truth: VideoTruth, clip: dict) -> int | None:
    """The truth shot covering at least ``MIN_OVERLAP`` of the clip's frames, if any."""
    start, end = clip["start_frame"], clip["end_frame"]
    for s in truth.shots:
        if min(end, s.end_frame) - max(start, s.start_frame) >= MIN_OVERLAP * (end - start):
            return s.index
    return None


def near_duplicate_clips(truth: VideoTruth, clips: list[dict]) -> set[int]:
    """Positions in ``clips`` (one video's) that have a near-duplicate IN THE POOL: the clip is mostly
    a copied shot or its original, and some clip is mostly the other one. A copy whose partner never
    became a clip (too short, cut away) has nothing to be a duplicate of."""
    shots = [main_shot(truth, c) for c in clips]
    found = set()
    for s in truth.shots:
        if not s.duplicate_of:
            continue
        pair = {s.index, int(s.duplicate_of.split(":")[1])}
        members = [k for k, shot in enumerate(shots) if shot in pair]
        if {shots[k] for k in members} == pair:
            found.update(members)
    return found


def score_all(clips: list[dict], cfg: ScoreConfig, per_film_dedup: bool = False) -> list[dict]:
    """The score stage's per-clip function over every clip, in this process; then dedup groups (over
    the pool, or within each film: ``per_film_dedup``)."""
    filters = build_filters(cfg)
    basic, vtss = BasicFilter(), VTSSFilter(cfg.quality)
    rows = [score_clip(c, filters, cfg, basic, vtss) | {"truth_kinds": c["truth_kinds"]} for c in clips]
    for film in {r["source_id"] for r in rows} if per_film_dedup else [None]:
        part = [r for r in rows if film in (None, r["source_id"])]
        with tempfile.TemporaryDirectory() as side:  # the embeddings go through the side store, as in the stage
            write_side_store(part, side, cfg.dedup)
            add_duplicate_groups(part, cfg, side)
    return rows


def precision_recall(rows: list[dict]) -> dict:
    """Per planted kind and per target group: P/R of the matching filter's default decision. A clip
    flagged for a sibling kind of the same filter (pillarbox for the letterbox row, noise for the
    blur row) is left out of that row's false positives; so is a still picture flagged as frozen (a
    static screen from end to end)."""
    rules = default_thresholds()
    rules["too_static"] = {"column": "score_motion", "min": rules["motion"]["min"]}  # the motion rule's lower half
    sizes: dict[str, int] = {}
    for row in rows:
        sizes[row["dup_group"]] = sizes.get(row["dup_group"], 0) + 1
    groups = {**{k: {k} for k in KIND_FILTER}, **{f"target:{g}": kinds for g, kinds in TARGET_GROUPS.items()}}
    out = {}
    for name, kinds in groups.items():
        flt = KIND_FILTER[next(iter(kinds))]
        siblings = {k for k, f in KIND_FILTER.items() if f == flt or {f, flt} == {"static", "too_static"}} - kinds
        tp = fp = fn = 0
        for row in rows:
            truth = set(row["truth_kinds"])
            has = bool(kinds & truth)
            if flt == "dedup":  # flagged = in a near-duplicate group of two or more
                said = row["dup_group"] is not None and sizes[row["dup_group"]] > 1
            else:
                said = rejects(row, rules[flt])
            if said and not has and siblings & truth:
                continue
            tp += has and said
            fp += said and not has
            fn += has and not said
        tp, fp, fn = int(tp), int(fp), int(fn)  # numpy scores make numpy counts: JSON wants ints
        out[name] = {"filter": flt, "column": rules[flt]["column"], "positives": tp + fn, "tp": tp, "fp": fp,
                     "fn": fn, "precision": round(tp / max(tp + fp, 1), 3), "recall": round(tp / max(tp + fn, 1), 3)}
    return out


def clean_rejections(rows: list[dict], profile: str = "540p") -> dict:
    """Share of clean clips (no planted defect) the strict profile rejects, and by which rules."""
    df = pd.DataFrame(rows)
    names, _ = apply_profile(df, load_profile(profile), load_columns(), "tiny")
    clean = [r for r, row in zip(names, rows, strict=True) if not row["truth_kinds"]]
    rejected = [r for r in clean if r]
    by_rule: dict[str, int] = {}
    for r in rejected:
        for name in r:
            by_rule[name] = by_rule.get(name, 0) + 1
    return {"profile": profile, "clean_clips": len(clean), "rejected": len(rejected),
            "rate": round(len(rejected) / max(len(clean), 1), 3), "by_rule": dict(sorted(by_rule.items()))}


def throughput(clips: list[dict], cfg: ScoreConfig) -> dict:
    """Each frame filter alone (its own decode) vs the shared decode, on the same clips."""
    filters = build_filters(cfg)

    def decode(c):
        return decode_clip(c["clip_uri"], c["num_frames"], c["fps"], cfg.decode)

    started = time.perf_counter()
    for c in clips:
        frames = decode(c)
        for flt in filters.values():
            flt(frames)
    shared = time.perf_counter() - started
    alone = {}
    for name, flt in filters.items():
        started = time.perf_counter()
        compute = 0.0
        for c in clips:
            frames = decode(c)
            t = time.perf_counter()
            flt(frames)  # a fresh decode: nothing cached from another filter (OCR lines included)
            compute += time.perf_counter() - t
        total = time.perf_counter() - started
        alone[name] = {"clips_per_s_compute": round(len(clips) / max(compute, 1e-9), 2),
                       "clips_per_s_with_own_decode": round(len(clips) / total, 2), "seconds_with_own_decode": round(total, 2)}
    separate = sum(v["seconds_with_own_decode"] for v in alone.values())
    return {"clips": len(clips), "per_filter": alone, "shared_decode_seconds": round(shared, 2),
            "shared_decode_clips_per_s": round(len(clips) / shared, 2), "separate_decode_seconds": round(separate, 2),
            "separate_decode_clips_per_s": round(len(clips) / max(separate, 1e-9), 2),
            "speedup_shared_vs_separate": round(separate / max(shared, 1e-9), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--throughput-clips", type=int, default=40, help="clips timed filter by filter")
    parser.add_argument("--truth-shots", action="store_true", help="cut clips at the truth's shots, not segment's")
    parser.add_argument("--world", choices=("synthetic", "real"), default="synthetic",
                        help="real: the real-content set (benchmarks.realset; --videos films of seed --seed)")
    parser.add_argument("--work", default="/tmp/reelflow-bench-filters")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "filters.json"))
    args = parser.parse_args()
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)  # the machine is shared
    cfg = ScoreConfig(aesthetic={"cache_dir": os.path.join(args.work, "models")})
    shots_from = "truth" if args.truth_shots else "segment"
    paths = None
    if args.world == "real":
        from benchmarks.realset.build import DEFAULT_CACHE, build_realset

        paths = build_realset(os.path.join(DEFAULT_CACHE, f"films_seed{args.seed}_640x360"), args.videos, args.seed,
                              progress=False)
        shots_from += "-real"
    clips = build_clips(os.path.join(args.work, "corpus"), os.path.join(args.work, f"clips-{shots_from}"), args.videos,
                        args.seed, truth_cuts=args.truth_shots, paths=paths, photographs=args.world == "real")
    started = time.perf_counter()
    rows = score_all(clips, cfg, per_film_dedup=args.world == "real")
    seconds = time.perf_counter() - started
    # the scored rows, for looking into misses without scoring again
    with open(os.path.join(args.work, f"rows-{shots_from}.pkl"), "wb") as fh:
        pickle.dump(rows, fh)
    result = {
        "corpus": {"world": args.world, "videos": args.videos, "seed": args.seed, "clips": len(clips),
                   **({"defect_rate": 0.6} if args.world == "synthetic" else {"dedup_pool": "each film"}),
                   "shots_from": "truth shot ranges" if args.truth_shots else "tasks.curate.segment.segment_video (default config)"},
        "developed_on": DEVELOPED_ON[args.world], "clip_has_defect": f"a truth defect kind covers >= {MIN_OVERLAP} of the clip's frames (union of its "
                           "defects), >= 2 frames for black/frozen; near_duplicate: the clip is mostly a copied shot or "
                           "its original, and another clip is mostly the other",
        "thresholds": default_thresholds(),
        "precision_recall": precision_recall(rows),
        "clean_rejected_by_strict": clean_rejections(rows),
        "score_stage_clips_per_s": round(len(rows) / seconds, 2),
        "throughput": throughput(clips[: args.throughput_clips], cfg),
        "machine": f"{os.cpu_count()} CPUs, shared; one thread",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, default=str)
    for name, pr in result["precision_recall"].items():
        print(f"{name:24s} {pr['filter']:8s} n={pr['positives']:3d} P={pr['precision']:.3f} R={pr['recall']:.3f}")
    c = result["clean_rejected_by_strict"]
    print(f"clean clips rejected by {c['profile']}: {c['rejected']}/{c['clean_clips']} = {c['rate']:.3f} {c['by_rule']}")
    t = result["throughput"]
    print(f"score stage {result['score_stage_clips_per_s']} clips/s; shared {t['shared_decode_clips_per_s']} vs "
          f"separate {t['separate_decode_clips_per_s']} clips/s: speed-up {t['speedup_shared_vs_separate']}x")


if __name__ == "__main__":
    main()
