"""Synthetic films: plan a film (its truth plus what to render), render it frame by frame, encode it.

One film is a pure function of (cfg, seed): the same seed gives byte-identical truth and identical
decoded frames, and films are independent, so a corpus renders in parallel. Frames are encoded at a
constant rate with pts = frame index (time base 1/fps) and no B-frames, so every decoder yields
exactly ``num_frames`` frames in order and truth frame indices are decoded-frame indices.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np
from tqdm import tqdm

from infra.config import CorpusConfig
from tasks.corpus.lib.defects import (
    FOOTAGE_KINDS,
    VIDEO_LOGO_SHARE,
    Planted,
    logos_inside_picture,
    plan_duplicate,
    plan_shot_defects,
    plan_video_defects,
)
from tasks.corpus.lib.drawing import apply_footage, apply_timeline, timeline_defects
from tasks.corpus.lib.scene import ShotScene, build_shot, near_duplicate, render
from tasks.corpus.lib.transitions import (
    Layout,
    PlannedHardNegative,
    apply_hard_negatives,
    blend,
    frame_recipes,
    make_layout,
    plan_hard_negatives,
    plan_joins,
)
from tasks.corpus.lib.truth import Shot, VideoTruth, save_truth

# Passed to x264 itself: a fixed count of frame threads (sliced threads are not repeatable run to
# run here), and no B-frames, so pts == dts == frame index and no decoder needs an edit list.
X264_OPTIONS = {"crf": "18", "preset": "veryfast"}
X264_PARAMS = "bframes=0:threads=2:sliced-threads=0"


def video_id_for(index: int) -> str:
    return f"film_{index:04d}"


def video_seed_for(seed: int, index: int) -> int:
    """Per-film seed from the corpus seed and the film's index (stable across platforms)."""
    digest = hashlib.sha256(f"reelflow-corpus:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def margin_frames(fps: float) -> int:
    """Distance kept between a transition and any black / frozen / flash / crossing frame."""
    return max(12, round(fps / 2))


@dataclass(frozen=True, eq=False)
class VideoPlan:
    truth: VideoTruth
    layout: Layout
    scenes: tuple[ShotScene, ...]
    planted: tuple[Planted, ...]
    hard: tuple[PlannedHardNegative, ...]


def _shot_lengths(rng: np.random.Generator, cfg: CorpusConfig, n: int) -> list[int]:
    lo = max(round(cfg.fps), round(cfg.shot_seconds[0] * cfg.fps))  # never under ~1 s of clean frames
    hi = max(lo, round(cfg.shot_seconds[1] * cfg.fps))
    return [int(rng.integers(lo, hi + 1)) for _ in range(n)]


def plan_video(video_id: str, seed: int, cfg: CorpusConfig) -> VideoPlan:
    """Everything about a film except its pixels: edit, shots, defects, hard negatives, truth."""
    rng = np.random.default_rng(seed)
    fps, width, height = cfg.fps, cfg.width, cfg.height
    n = int(rng.integers(cfg.shots_per_video[0], cfg.shots_per_video[1] + 1))
    clean = _shot_lengths(rng, cfg, n)
    duplicates = plan_duplicate(rng, n)
    for copy, original in duplicates.items():
        clean[copy] = clean[original]
    lay = make_layout(clean, plan_joins(rng, n, fps))
    margin = margin_frames(fps)
    # A fast pan would change the original's camera but not its copy's record: keep both out.
    hard = plan_hard_negatives(rng, lay, fps, margin, set(duplicates) | set(duplicates.values()))
    fast = {h.shot for h in hard if h.truth.kind == "fast_pan"}

    scenes: list[ShotScene] = []
    for j in range(n):
        shot_rng = np.random.default_rng([seed, j])
        if j in duplicates:  # same take, aligned so both clean ranges start at the same moment
            o = duplicates[j]
            lead = [lay.shots[k][0] - lay.content_start[k] for k in (o, j)]
            scenes.append(near_duplicate(shot_rng, scenes[o], lead[0] - lead[1]))
        else:
            prev_hue = scenes[-1].hue if scenes else None
            scenes.append(build_shot(shot_rng, width, height, fps, lay.spans[j], prev_hue, j in fast))

    with_logo = bool(rng.random() < VIDEO_LOGO_SHARE)
    busy = {h.shot for h in hard if h.truth.kind != "fast_pan"}
    static = {j for j, s in enumerate(scenes) if s.camera.is_static()}
    planted = plan_shot_defects(rng, lay, fps, width, height, cfg.defect_rate, margin, busy, static,
                                set(duplicates), with_logo, lambda j: _content_frames(scenes[j], lay, j))
    black = [(p.defect.start_frame, p.defect.end_frame) for p in planted if p.defect.kind == "black"]
    planted += plan_video_defects(rng, lay.num_frames, width, height, black, with_logo)
    planted = logos_inside_picture(planted, width, height)

    shots = [
        Shot(index=j, start_frame=s, end_frame=e, camera=sc.camera_truth, subjects=list(sc.subjects),
             category=sc.category, duplicate_of=f"{video_id}:{duplicates[j]}" if j in duplicates else None)
        for j, ((s, e), sc) in enumerate(zip(lay.shots, scenes, strict=True))
    ]
    truth = VideoTruth(
        video_id=video_id, seed=seed, fps=fps, width=width, height=height, num_frames=lay.num_frames,
        shots=shots, transitions=list(lay.transitions),
        defects=sorted((p.defect for p in planted), key=lambda d: (d.start_frame, d.kind, d.end_frame)),
        hard_negatives=[h.truth for h in hard],
    )
    return VideoPlan(truth, lay, tuple(scenes), tuple(planted), tuple(hard))


def _content_frames(scene: ShotScene, lay, j: int, count: int = 3) -> list[np.ndarray]:
    """``count`` content frames spread over shot ``j``'s clean range (where its defects are judged)."""
    start, end = lay.shots[j]
    return [render(scene, int(f) - lay.content_start[j]) for f in np.linspace(start, end - 1, count).round()]


def _ranges(plan: VideoPlan, kind: str) -> list[tuple[int, int]]:
    return [(p.defect.start_frame, p.defect.end_frame) for p in plan.planted if p.defect.kind == kind]


def render_video(plan: VideoPlan) -> Iterator[np.ndarray]:
    """The film's frames in order (BGR uint8), one at a time: memory stays flat at any length."""
    lay, truth = plan.layout, plan.truth
    footage: dict[int, list[Planted]] = {}
    for p in plan.planted:
        if p.defect.kind in FOOTAGE_KINDS and p.shot is not None:
            footage.setdefault(p.shot, []).append(p)
    overlays, hard = timeline_defects(list(plan.planted)), list(plan.hard)
    black, frozen = _ranges(plan, "black"), _ranges(plan, "frozen")
    dark = np.zeros((truth.height, truth.width, 3), np.uint8)
    held = dark
    for i, recipe in enumerate(frame_recipes(lay)):
        if any(s < i < e for s, e in frozen):  # the first frozen frame repeats until the segment ends
            yield held
            continue
        if any(s <= i < e for s, e in black):
            frame = dark
        else:
            parts = [(apply_footage(render(plan.scenes[j], i - lay.content_start[j]), footage.get(j, []),
                                    i - lay.content_start[j]), weight) for j, weight in recipe]
            frame = apply_hard_negatives(blend(parts), i, hard)
        frame = apply_timeline(frame, i, overlays)
        if any(s == i for s, _ in frozen):
            held = frame
        yield frame


def encode_mp4(
    frames: Iterable[np.ndarray], path: str, width: int, height: int, fps: float,
    repeats: Iterable[tuple[int, int]] = (),
) -> int:
    """H.264 / yuv420p at a constant frame rate, pts = frame index; returns the frame count.

    ``repeats`` are frame ranges whose frames all equal their first one (frozen, black). Their later
    frames are coded at the coarsest quantiser (an x264 zone), which leaves nothing to code but
    skip blocks, so they *decode* identical too; otherwise x264 keeps refining the repeated picture.
    """
    rate = Fraction(fps).limit_denominator(1001)
    zones = "/".join(f"{s + 1},{e - 1},q=51" for s, e in sorted(repeats) if e - 1 >= s + 1)
    params = X264_PARAMS + (f":zones={zones}" if zones else "")
    count = 0
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate, options={**X264_OPTIONS, "x264-params": params})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        for count, image in enumerate(frames, start=1):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = count - 1, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return count


def generate_video(video_id: str, seed: int, cfg: CorpusConfig, out_dir: str) -> VideoTruth:
    """Render one film to ``<out_dir>/<video_id>.mp4`` and its ``.truth.json``. The mp4 is written
    under a temporary name and renamed; the truth is written last, so its presence marks a
    complete film."""
    plan = plan_video(video_id, seed, cfg)
    os.makedirs(out_dir, exist_ok=True)
    repeats = _ranges(plan, "frozen") + _ranges(plan, "black")
    write_film(render_video(plan), plan.truth, os.path.join(out_dir, f"{video_id}.mp4"),
               cfg.width, cfg.height, cfg.fps, repeats)
    return plan.truth


def write_film(frames: Iterable[np.ndarray], truth: VideoTruth, final: str, width: int, height: int,
               fps: float, repeats: list[tuple[int, int]]) -> None:
    """Encode ``frames`` to ``final`` through a temporary name, check the frame count against the truth,
    rename, then write the truth: its presence marks a complete film (a killed build leaves none)."""
    tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.tmp")
    try:
        written = encode_mp4(frames, tmp, width, height, fps, repeats)
        if written != truth.num_frames:
            raise RuntimeError(f"{truth.video_id}: rendered {written} frames, truth says {truth.num_frames}")
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    save_truth(truth, final)


def _quiet_worker() -> None:
    cv2.setNumThreads(1)  # one film per process already fills the cores


def generate_corpus(out_dir: str, cfg: CorpusConfig, progress: bool = True) -> list[str]:
    """Render ``cfg.videos`` films (``film_0000`` ...) into ``out_dir``; returns the mp4 paths.

    Films render in ``cfg.workers`` spawned processes (0 = one per CPU); a calling script needs the
    usual ``if __name__ == "__main__":`` guard, or ``workers=1`` to render in this process."""
    jobs = [(video_id_for(i), video_seed_for(cfg.seed, i)) for i in range(cfg.videos)]
    workers = min(cfg.workers or os.cpu_count() or 1, len(jobs))
    with tqdm(total=len(jobs), desc="corpus", unit="film", disable=not progress) as bar:
        if workers == 1:
            for video_id, seed in jobs:
                generate_video(video_id, seed, cfg, out_dir)
                bar.update()
        else:
            # spawn, not fork: the caller may hold threads (Prefect, Ray) that fork would break.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_quiet_worker) as pool:
                for future in as_completed([pool.submit(generate_video, v, s, cfg, out_dir) for v, s in jobs]):
                    future.result()
                    bar.update()
    return [os.path.join(out_dir, f"{video_id}.mp4") for video_id, _ in jobs]
