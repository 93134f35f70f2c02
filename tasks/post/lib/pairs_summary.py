"""The ``pairs`` stage's driver-side steps: simulated labels for the human pairs (the motion-statistics
oracle of ``models.distortions``, fitted on the real clips of this run) and the provenance it logs
(counts by kind and distortion, the discarded share, a contact sheet)."""

from __future__ import annotations

import os
from collections import Counter

from infra.config_post import PairsConfig
from infra.contact_sheet import contact_sheet
from infra.stage import StageWork
from models.distortions import MotionOracle, level

SHEET_VIDEOS = 12


def label_human_pairs(rows: list[dict], results: list[dict], tie_margin: float) -> None:
    """Fill label / failure of the human pairs in place, marked ``simulated``."""
    real = [r["real_stats"] for r in results if r.get("real_stats")]
    stats = {uri: s for r in results for uri, s in r.get("sample_stats", {}).items()}
    oracle = MotionOracle(real, tie_margin) if real else None
    for row in rows:
        if row["kind"] != "human" or row["error"] is not None:
            continue
        if oracle is None:
            row["error"] = "simulated labels need the motion statistics of real clips; no clip was usable"
            continue
        row["label"], row["failure"] = oracle.judge(stats[row["a_uri"]], stats[row["b_uri"]])
        row["label_source"] = "simulated"


def _counts(rows: list[dict]) -> tuple[Counter, Counter]:
    """(pairs, discarded pairs) per distortion an automatic pair involves."""
    made, discarded = Counter(), Counter()
    for row in rows:
        if row["kind"] != "auto" or row["error"] is not None:
            continue
        for desc in {row["a_desc"], row["b_desc"]} - {"real"}:
            made[desc] += 1
            discarded[desc] += bool(row["discarded"])
    return made, discarded


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarise(work: StageWork, rows: list[dict], results: list[dict], cfg: PairsConfig, checkpoint: str,
              human_mode: str, audit_mode: str) -> None:
    """Metrics, ``_SUCCESS.json`` stats and the contact sheet of the stage."""
    usable = [r for r in rows if r["error"] is None]
    # Clips below clip_match_min make no rows; the pairs they would have made count as discarded.
    dropped_clips = [r for r in results if r.get("dropped_pairs")]
    dropped_pairs = sum(r["dropped_pairs"] for r in dropped_clips)
    discarded = sum(bool(r["discarded"]) for r in usable)
    share = (discarded + dropped_pairs) / max(len(usable) + dropped_pairs, 1)
    kinds = Counter(r["kind"] for r in usable)
    labels = Counter(f"{r['label_source']}:{r['label']}" for r in usable)
    made, thrown = _counts(rows)
    clips = [r for r in results if r["kind"] == "clip" and r["rows"] and r["rows"][0]["error"] is None]
    prompts = [r for r in results if r["kind"] == "prompt" and r["rows"] and r["rows"][0]["error"] is None]
    work.metrics.update({
        "pairs": len(usable), "pairs_auto": kinds["auto"], "pairs_human": kinds["human"], "discarded": discarded,
        "discarded_share": share, "clips": len(clips), "clips_dropped_clip_match": len(dropped_clips),
        "error_items": len(rows) - len(usable), "seconds_per_clip": _mean([r["seconds"] for r in clips]),
        "seconds_per_human_prompt": _mean([r["seconds"] for r in prompts]),
        "clip_similarity_mean": _mean([r["similarity"] for r in results if "similarity" in r]),
        **{f"pairs.{d}": n for d, n in made.items()}, **{f"discarded.{d}": n for d, n in thrown.items()},
    })
    work.stats.update({
        "checkpoint": checkpoint, "human_pairs_mode": human_mode, "audit_mode": audit_mode,
        "counts": {"kind": dict(kinds), "distortion": dict(made), "discarded_by_distortion": dict(thrown),
                   "labels": dict(labels)},
        "discarded_share": share, "clips_dropped_clip_match": len(dropped_clips),
        "seconds_per_clip": work.metrics["seconds_per_clip"],
        "seconds_per_human_prompt": work.metrics["seconds_per_human_prompt"],
        "levels": {d: level(d) for d in ["real", *cfg.distortions]},
    })
    videos = [v for r in clips[:1] + prompts[:1] for v in r["videos"]][:SHEET_VIDEOS]
    if videos:
        tmp = [(work.tmp_uri + uri[len(work.final_uri):], None, desc) for desc, uri in videos]
        work.artifacts.append(contact_sheet(tmp, os.path.join(work.scratch_dir, "pairs_contact_sheet.png")))
