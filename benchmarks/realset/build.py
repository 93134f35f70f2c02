"""Build the real-content development set: plan each film (:mod:`benchmarks.realset.plan`), render it
frame by frame, encode it with the synthetic corpus's encoder, write its truth sidecar.

    python -m benchmarks.realset.build [--videos 14] [--seed 0] [--out benchmarks/.cache/realset]

Films are ``real_0000.mp4`` ... with ``real_0000.truth.json`` beside them, in
:mod:`tasks.corpus.lib.truth`'s schema. One film is a pure function of (seed, index, the packages'
photos); the truth is written last, so its presence marks a complete film.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmarks.realset import camera as cam
from benchmarks.realset import overlays as ov
from benchmarks.realset.plan import FilmPlan, Take, plan_film
from benchmarks.realset.sources import PACKAGES, cached_photos
from tasks.corpus.lib.films import write_film
from tasks.corpus.lib.transitions import apply_hard_negatives, blend, frame_recipes
from tasks.corpus.lib.truth import VideoTruth, truth_path

DEFAULT_CACHE = os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache", "realset")


def film_seed(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"reelflow-realset:{seed}:{index}".encode()).digest()[:4], "little")


def _scale(size: tuple[int, int], width: int) -> float:
    """The photograph at about 1.8 frame widths: the camera's crop then needs no large downscale."""
    return min(1.0, 1.1 * width / (cam.COVER * size[0]))


def _photo(path: str, width: int) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    scale = _scale((image.shape[1], image.shape[0]), width)
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image


def _photo_size(path: str, width: int) -> tuple[int, int]:
    with Image.open(path) as img:
        scale = _scale(img.size, width)
        return (round(img.size[0] * scale), round(img.size[1] * scale)) if scale < 1 else img.size


def _take_frame(plan: FilmPlan, j: int, t: int, images: dict, width: int, height: int) -> np.ndarray:
    take: Take = plan.takes[j]
    if take.photo is None:
        return np.zeros((height, width, 3), np.uint8)
    clock = t + take.params.get("clock", 0) - take.params.get("paused", {}).get(t + plan.layout.content_start[j], 0)
    frame = cam.render(images[take.photo], take.camera, clock, width, height)
    if take.variant == "reencode":  # the same take through a starved encoder and a soft scaler
        ok, buf = cv2.imencode(".jpg", cv2.GaussianBlur(frame, (0, 0), 0.7), [cv2.IMWRITE_JPEG_QUALITY, 30])
        frame = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    for m in take.params.get("mosaics", []):
        bw, bh = m["size"]
        if "anchor" in m:
            cx, cy = cam.project(take.camera, clock, m["anchor"], width, height)
            x, y = cx - bw / 2, cy - bh / 2
        else:
            x, y = (m["start"][k] + m["velocity"][k] * (t - m["t_mid"]) for k in (0, 1))
        ov.moving_mosaic(frame, (round(x), round(y), bw, bh), m["cell"])
    if "sticker" in take.params:
        st = take.params["sticker"]
        x, y = st["xy"][0] + 30 * np.sin(0.09 * t + st["phase"]), st["xy"][1] + 18 * np.cos(0.13 * t + st["phase"])
        ov.draw_patch(frame, st["img"], round(x), round(y))
    if "logo" in take.params:
        logo = take.params["logo"]
        if logo["mark"] is None:
            logo["mark"] = ov.image_logo(images[take.photo], np.random.default_rng(logo["seed"]), logo["size"])
        ov.draw_patch(frame, logo["mark"], *logo["xy"], opacity=0.85)
    if "bars" in take.params:
        ov.bars(frame, take.params["bars"])
    return frame


def render_film(plan: FilmPlan, images: dict):
    truth, lay = plan.truth, plan.layout
    w, h = truth.width, truth.height
    for (f0, f1, mode) in plan.freezes:  # a paused take resumes where it stopped
        if mode == "pause":
            j = next(k for k, (s, e) in enumerate(lay.shots) if s <= f0 < e)
            plan.takes[j].params.setdefault("paused", {}).update({i: f1 - f0 for i in range(f1, lay.shots[j][1] + 64)})
    held, inside_black = None, [t.params["black"] for t in plan.takes if "black" in t.params]
    for i, recipe in enumerate(frame_recipes(lay)):
        freeze = next(((f0, f1) for f0, f1, _ in plan.freezes if f0 < i < f1), None)
        if freeze is not None:
            yield held
            continue
        if any(s <= i < e for s, e in inside_black):
            frame = np.zeros((h, w, 3), np.uint8)
        else:
            parts = [(_take_frame(plan, j, i - lay.content_start[j], images, w, h), wt) for j, wt in recipe]
            frame = apply_hard_negatives(blend(parts), i, plan.hard)
            drawn = [(d, p) for d, p in plan.text if d.start_frame <= i < d.end_frame]
            if drawn:
                frame = frame.copy()
            for d, p in drawn:
                ov.draw_patch(frame, p["patch"], d.box[0], d.box[1])
        held = frame
        yield frame


def build_film(index: int, seed: int, photos: list[str], out_dir: str, width: int, height: int, fps: float) -> str:
    video_id = f"real_{index:04d}"
    final = os.path.join(out_dir, f"{video_id}.mp4")
    if os.path.exists(truth_path(final)):
        return final
    os.makedirs(out_dir, exist_ok=True)
    sizes = [_photo_size(p, width) for p in photos]
    plan = plan_film(video_id, film_seed(seed, index), photos, sizes, width, height, fps)
    images = {k: _photo(photos[k], width) for k in sorted({t.photo for t in plan.takes if t.photo is not None})}
    repeats = [(f0, f1) for f0, f1, _ in plan.freezes] + [(d.start_frame, d.end_frame) for d in plan.truth.defects if d.kind == "black"]
    write_film(render_film(plan, images), plan.truth, final, width, height, fps, repeats)
    return final


def build_realset(out_dir: str, videos: int = 14, seed: int = 0, width: int = 640, height: int = 360, fps: float = 24.0,
                  cache: str = DEFAULT_CACHE, packages: tuple[str, ...] = PACKAGES, workers: int = 2,
                  progress: bool = True) -> list[str]:
    """Fetch the photos (cached), render ``videos`` films into ``out_dir``; returns the mp4 paths."""
    photos = cached_photos(cache, packages)
    os.makedirs(out_dir, exist_ok=True)
    args = [(k, seed, photos, out_dir, width, height, fps) for k in range(videos)]
    with tqdm(total=videos, desc="realset", unit="film", disable=not progress) as bar:
        if workers <= 1:
            paths = []
            for a in args:
                paths.append(build_film(*a))
                bar.update()
            return paths
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(build_film, *a) for a in args]
            for f in futures:
                f.result()
                bar.update()
            return [f.result() for f in futures]


def summary(paths: list[str]) -> dict:
    from tasks.corpus.lib.truth import load_truth

    truths: list[VideoTruth] = [load_truth(p) for p in paths]
    kinds = [t.kind for tr in truths for t in tr.transitions]
    defects = [d.kind for tr in truths for d in tr.defects]
    return {"videos": len(truths), "frames": sum(t.num_frames for t in truths), "boundaries": len(kinds),
            **{k: kinds.count(k) for k in ("cut", "dissolve", "fade")},
            "gradual_share": round(sum(k != "cut" for k in kinds) / max(1, len(kinds)), 3),
            "defects": {k: defects.count(k) for k in sorted(set(defects))},
            "hard_negatives": {k: sum(h.kind == k for tr in truths for h in tr.hard_negatives)
                               for k in ("fast_pan", "flash", "crossing_object")},
            "near_duplicates": sum(s.duplicate_of is not None for tr in truths for s in tr.shots)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="apt downloads and downscaled photos")
    parser.add_argument("--out", default=None, help="default: <cache>/films_seed<seed>_<w>x<h>")
    args = parser.parse_args()
    out = args.out or os.path.join(args.cache, f"films_seed{args.seed}_{args.width}x{args.height}")
    paths = build_realset(out, args.videos, args.seed, args.width, args.height, cache=args.cache, workers=args.workers)
    print(summary(paths))


if __name__ == "__main__":
    main()
