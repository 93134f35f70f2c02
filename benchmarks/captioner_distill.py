"""Captioner distillation (report 3.2, SkyCaptioner-V1) measured: agreement with the teacher and accuracy
against the corpus truth, before and after, on held-out clips.

Films come from the corpus generator; clips are cut from the truth's shot ranges (benchmarks.caption), the
teacher captions are the caption stage's worker output on them (tiny random captioner + sub-experts +
fusion, as `make run` makes them), and :func:`tasks.curate.captioner_distill.distill` (what the stage runs)
splits, balances, fine-tunes and captions the held-out clips with the base and the distilled captioner.
Truth: the main subject's category and the camera's 6DoF signs and speed class of each clip's shot.

    python -m benchmarks.captioner_distill --videos 12 --seed 7 --out benchmarks/results/captioner_distill.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.caption import cut_truth_clips  # noqa: E402
from infra.config import CorpusConfig  # noqa: E402
from infra.config_caption import CaptionConfig  # noqa: E402
from infra.config_distill import CaptionerDistillConfig  # noqa: E402
from models.caption_schema import StructuredCaption  # noqa: E402
from tasks.corpus.lib.films import generate_corpus  # noqa: E402
from tasks.curate.caption import CaptionWorker, resolve_models  # noqa: E402
from tasks.curate.captioner_distill import distill  # noqa: E402

AXES = ("tx", "ty", "tz", "roll", "pitch", "yaw")


def teacher_rows(clips, cfg: CaptionConfig) -> list[tuple[dict, object]]:
    """Each clip row with the caption stage's caption (``caption_json``, ``category``) and its truth shot."""
    worker = CaptionWorker(cfg.model_dump(), *resolve_models(cfg))
    out = []
    for row, shot in clips:
        (result,) = worker({"rows": [row], "names": list(row)})
        captioned = result["row"]
        if captioned["caption_json"] is not None:
            out.append(({**row, "caption_json": captioned["caption_json"], "category": captioned["category"]}, shot))
    return out


def truth_accuracy(captions: list[StructuredCaption | None], shots: list) -> dict[str, float]:
    """Share of clips whose category / camera axes / speed class match the truth (a missing caption misses)."""
    hits = {"category": 0, "camera_axes": 0, "camera_speed": 0}
    for caption, shot in zip(captions, shots, strict=True):
        if caption is None:
            continue
        cam = caption.camera_motion
        hits["category"] += caption.category == shot.category
        hits["camera_axes"] += all(getattr(cam, a) == getattr(shot.camera, a) for a in AXES)
        hits["camera_speed"] += cam.speed == shot.camera.speed
    return {k: round(v / max(len(shots), 1), 4) for k, v in hits.items()}


@contextlib.contextmanager
def _work_dir(path: str | None):
    if path:
        os.makedirs(path, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="reelflow-bench-distill-") as work:
            yield work


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=None, help="default: the stage's config")
    parser.add_argument("--max-clips", type=int, default=0, help="0: every truth clip")
    parser.add_argument("--out", default="benchmarks/results/captioner_distill.json")
    parser.add_argument("--work", default=None, help="keep the corpus, clips and teacher captions here and reuse "
                        "them on a rerun with the same --videos/--seed (the teacher captions are most of the time)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load_start = os.getloadavg()
    corpus_cfg = CorpusConfig(videos=args.videos, seed=args.seed, workers=1)
    update = {"max_clips": args.max_clips or None, **({"epochs": args.epochs} if args.epochs else {})}
    cfg = CaptionerDistillConfig().model_copy(update=update)
    started = time.time()
    with _work_dir(args.work) as work:
        caption_cfg = CaptionConfig(cache_dir=os.path.join(work, "models"), torch_threads=1)
        cache = os.path.join(work, f"teacher-v{args.videos}-s{args.seed}.pkl")
        if os.path.exists(cache):
            with open(cache, "rb") as fh:
                clips, rows, teacher_seconds = pickle.load(fh)
        else:
            corpus = os.path.join(work, f"corpus-v{args.videos}-s{args.seed}")
            generate_corpus(corpus, corpus_cfg, progress=False)
            clips = cut_truth_clips(corpus, os.path.join(work, f"clips-v{args.videos}-s{args.seed}"))
            rows = teacher_rows(clips, caption_cfg)
            teacher_seconds = time.time() - started
            with open(cache + ".tmp", "wb") as fh:
                pickle.dump((clips, rows, teacher_seconds), fh)
            os.replace(cache + ".tmp", cache)
        shot_of = {r["clip_id"]: s for r, s in rows}
        result = distill([pickle.loads(pickle.dumps(r)) for r, _ in rows], cfg, caption_cfg, os.path.join(work, "distilled"))
    held_shots = [shot_of[r["clip_id"]] for r in result.held]
    teacher = [StructuredCaption.model_validate_json(r["caption_json"]) for r in result.held]
    report = {
        "what": "captioner distillation: held-out agreement with the teacher (caption stage output) and accuracy "
                "against the corpus truth, base vs distilled captioner",
        "agreement_with_teacher": {k: result.evaluation[k] for k in ("before", "after", "mean_before", "mean_after")},
        "truth_accuracy": {"teacher": truth_accuracy(teacher, held_shots),
                           "base": truth_accuracy(result.before, held_shots),
                           "distilled": truth_accuracy(result.after, held_shots)},
        "valid_after": result.evaluation["valid_after"],
        "clips": {"truth_clips": len(clips), "captioned": len(rows), "train": len(result.train),
                  "holdout": len(result.held), "train_categories": result.evaluation["train_categories"]},
        "loss": {"first": result.losses[0], "last": result.losses[-1], "steps": len(result.losses)},
        "seconds": {"teacher_captions": round(teacher_seconds, 1), "fine_tune": round(result.train_seconds, 1),
                    "total": round(time.time() - started, 1)},
        "config": cfg.model_dump(),
        "setup": {"corpus": corpus_cfg.model_dump(), "threads": 1,
                  "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
                  "load_average_at_start": load_start, "load_average_at_end": os.getloadavg()},
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1)
    print(json.dumps({k: report[k] for k in ("agreement_with_teacher", "truth_accuracy", "clips", "seconds")}, indent=1))
    return report


if __name__ == "__main__":
    main()
