"""The edit of one real-content film, as data: takes of photographs (or black runs between two cuts),
their joins, camera paths, planted overlays and hard negatives, and the truth they imply.

A black run of one to two seconds between two cuts is a take without content: its two cuts are true
boundaries (``Transition`` records) and the run itself is no shot; it is also recorded as a ``black``
defect, so a benchmark can tell that no boundary may fall inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from benchmarks.realset import camera as cam
from benchmarks.realset import overlays as ov
from tasks.corpus.lib.transitions import Join, Layout, PlannedHardNegative, make_layout
from tasks.corpus.lib.truth import Defect, HardNegative, Shot, Subject, VideoTruth

JOINS = {"cut": 0.40, "dissolve": 0.28, "fade": 0.20, "black": 0.12}  # "black": cut, black run, cut
OVERLAYS = {"subtitle": 1.4, "caption_text": 0.7, "mosaic_drift": 0.8, "mosaic_track": 0.8, "logo": 1.2,
            "sticker": 0.6, "letterbox": 0.8, "pillarbox": 0.6, "frozen": 1.0, "black": 0.6}
HARD = {"fast_pan": 0.1, "flash": 0.1, "crossing_object": 0.1}  # chance per eligible take
TAKES, SECONDS, BLACK_RUN_S, FREEZE_S = (10, 13), (2.0, 4.5), (1.0, 2.0), (1.8, 2.4)
MARGIN = 12  # frames kept between a transition and any planted event inside a shot


@dataclass
class Take:
    photo: int | None  # None: a black run between two cuts
    length: int  # clean frames
    overlays: list[str] = field(default_factory=list)
    duplicate_of: int | None = None
    variant: str = ""  # near-duplicate: "reencode" | "crop" | "reedit"
    camera: cam.CameraPlan | None = None
    params: dict = field(default_factory=dict)


@dataclass
class FilmPlan:
    truth: VideoTruth
    layout: Layout
    takes: list[Take]
    photos: list[str]
    hard: list[PlannedHardNegative]
    freezes: list[tuple[int, int, str]]  # timeline [start, end) held, and "pause" | "jump"
    text: list[tuple[Defect, dict]]  # edit-level text: subtitle / caption_text with its patch


def _joins(rng, n: int, fps: float) -> list[str]:
    return [str(rng.choice(list(JOINS), p=list(JOINS.values()))) for _ in range(n - 1)]


def _scaled(rng, lo: int, hi: int, fps: float) -> int:
    return max(3, round(int(rng.integers(lo, hi + 1)) * fps / 24))


def plan_film(video_id: str, seed: int, photos: list[str], photo_sizes: list[tuple[int, int]],
              width: int, height: int, fps: float) -> FilmPlan:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(TAKES[0], TAKES[1] + 1))
    kinds = _joins(rng, n, fps)
    takes: list[Take] = []
    joins: list[Join] = []
    order = rng.permutation(len(photos)).tolist()  # no photograph twice in a film, but a duplicate's
    for j in range(n):
        photo = int(order[j % len(order)])
        picks = [str(k) for k in rng.choice(list(OVERLAYS), size=int(rng.integers(0, 3)), replace=False,
                                             p=np.array(list(OVERLAYS.values())) / sum(OVERLAYS.values()))]
        if "frozen" in picks or "black" in picks:  # held or black frames carry no changing text
            picks = [k for k in picks if k not in ("subtitle", "caption_text", "black" if "frozen" in picks else "")]
        if "letterbox" in picks and "pillarbox" in picks:
            picks.remove("pillarbox")
        long = "frozen" in picks or "black" in picks
        seconds = rng.uniform(4.5, 6.0) if long else rng.uniform(*SECONDS)
        takes.append(Take(photo, max(round(fps), round(seconds * fps)), picks))
        if j < n - 1:
            kind = kinds[j]
            if kind == "black":  # cut, one to two seconds of black, cut
                joins.append(Join("cut", 0, 0, 0))
                takes.append(Take(None, round(rng.uniform(*BLACK_RUN_S) * fps)))
                joins.append(Join("cut", 0, 0, 0))
            elif kind == "dissolve":
                k = _scaled(rng, 8, 24, fps)
                joins.append(Join("dissolve", k, k, k))
            elif kind == "fade":
                a, b = _scaled(rng, 6, 12, fps), _scaled(rng, 6, 12, fps)
                joins.append(Join("fade", a, b, a + b))
            else:
                joins.append(Join("cut", 0, 0, 0))
    content = [j for j, t in enumerate(takes) if t.photo is not None]
    if rng.random() < 0.6 and len(content) >= 4:  # one near-duplicate pair: same take, another edit
        o, c = sorted(rng.choice(content[:-1], size=2, replace=False).tolist())
        if c - o >= 2:
            takes[c] = replace(takes[c], photo=takes[o].photo, length=takes[o].length, overlays=[], duplicate_of=o,
                               variant=str(rng.choice(["reencode", "crop", "reedit"])))
            takes[o].overlays = []
            takes[o].params["original"] = True
    lay = make_layout([t.length for t in takes], joins)
    return _populate(rng, video_id, seed, lay, takes, photos, photo_sizes, width, height, fps)


def _populate(rng, video_id, seed, lay: Layout, takes: list[Take], photos, sizes, width, height, fps) -> FilmPlan:
    hard: list[PlannedHardNegative] = []
    freezes: list[tuple[int, int, str]] = []
    text: list[tuple[Defect, dict]] = []
    defects: list[Defect] = []
    shots: list[Shot] = []
    for j, take in enumerate(takes):
        s, e = lay.shots[j]
        if take.photo is None:
            defects.append(Defect(kind="black", start_frame=s, end_frame=e))
            continue
        offset = s - lay.content_start[j]  # content frame of the clean range's first frame
        whip = None
        kind = None
        if take.duplicate_of is None and not take.overlays and not take.params.get("original"):
            draw = rng.random()
            kind = next((k for k, (lo, hi) in _bands().items() if lo <= draw < hi), None)
        if kind == "fast_pan" and e - s >= 2 * MARGIN + 10:
            whip = int(rng.integers(s + MARGIN, e - MARGIN - 9)) - lay.content_start[j]
        orig = takes[take.duplicate_of] if take.duplicate_of is not None else None
        if orig is not None:
            plan = orig.camera
            if take.variant == "crop":
                plan = replace(plan, base=plan.base * 0.86)
        else:
            moving = "frozen" in take.overlays
            plan = cam.plan_camera(rng, sizes[take.photo], width, height, 0, lay.spans[j] + 16, whip,
                                   move=str(rng.choice(["pan", "zoom", "drift", "tilt"])) if moving else None)
        take.camera = plan
        take.params["clock"] = int(rng.integers(8, 17)) if take.variant == "reedit" else 0
        if whip is not None:
            hard.append(PlannedHardNegative(j, HardNegative(kind="fast_pan", start_frame=whip + lay.content_start[j],
                                                            end_frame=whip + lay.content_start[j] + plan.whip[1])))
        elif kind in ("flash", "crossing_object"):
            length = 2 if kind == "flash" else max(6, round(rng.uniform(0.4, 0.7) * fps))
            if e - s >= 2 * MARGIN + length:
                start = int(rng.integers(s + MARGIN, e - MARGIN - length + 1))
                params = {} if kind == "flash" else {
                    "direction": int(rng.choice([-1, 1])), "width": float(rng.uniform(0.6, 0.85)),
                    "color": tuple(int(c) for c in rng.integers(5, 40, 3)),
                    "band": tuple(int(c) for c in rng.integers(20, 70, 3))}
                hard.append(PlannedHardNegative(j, HardNegative(kind=kind, start_frame=start, end_frame=start + length), params))
        defects += _overlays(rng, j, take, (s, e), lay, width, height, fps, freezes, text, offset)
        shots.append(Shot(index=len(shots), start_frame=s, end_frame=e, camera=cam.camera_truth(plan, width, height, fps),
                          subjects=[Subject(category="scenery", name="landscape", is_main=True)], category="scenery",
                          duplicate_of=None if take.duplicate_of is None else f"{video_id}:{_shot_index(takes, take.duplicate_of)}"))
    truth = VideoTruth(video_id=video_id, seed=seed, fps=fps, width=width, height=height, num_frames=lay.num_frames,
                       shots=shots, transitions=list(lay.transitions),
                       defects=sorted(defects, key=lambda d: (d.start_frame, d.kind, d.end_frame)),
                       hard_negatives=sorted((h.truth for h in hard), key=lambda h: h.start_frame))
    return FilmPlan(truth, lay, takes, photos, hard, freezes, text)


def _bands() -> dict[str, tuple[float, float]]:
    out, lo = {}, 0.0
    for k, p in HARD.items():
        out[k] = (lo, lo + p)
        lo += p
    return out


def _shot_index(takes: list[Take], j: int) -> int:
    return sum(1 for t in takes[:j] if t.photo is not None)


def _overlays(rng, j, take: Take, span, lay, width, height, fps, freezes, text, offset) -> list[Defect]:
    s, e = span
    out: list[Defect] = []
    picture = (0, 0, width, height)
    for kind in take.overlays:
        if kind in ("letterbox", "pillarbox"):
            if kind == "letterbox":
                bar = int(rng.integers(round(0.09 * height), round(0.14 * height))) // 2 * 2
                picture = (0, bar, width, height - 2 * bar)
            else:
                bar = int(rng.integers(round(0.1 * width), round(0.16 * width))) // 2 * 2
                picture = (bar, 0, width - 2 * bar, height)
            take.params["bars"] = picture
            out.append(Defect(kind=kind, start_frame=s, end_frame=e, box=picture))
    px, py, pw, ph = picture
    for kind in take.overlays:
        if kind in ("mosaic_drift", "mosaic_track"):
            bw, bh = round(rng.uniform(0.18, 0.32) * pw), round(rng.uniform(0.2, 0.35) * ph)
            cell = int(rng.integers(4, 17))
            x0, y0 = px + rng.uniform(0.1, 0.9) * pw - bw / 2, py + rng.uniform(0.15, 0.85) * ph - bh / 2
            entry = {"size": (bw, bh), "cell": cell, "t_mid": (s + e) / 2 - lay.content_start[j]}
            if kind == "mosaic_drift":
                entry["start"], entry["velocity"] = (x0, y0), (rng.uniform(-1.2, 1.2), rng.uniform(-0.6, 0.6))
            else:  # pinned to a point of the photograph: it follows the camera's motion
                entry["anchor"] = cam.photo_point(take.camera, entry["t_mid"], (x0 + bw / 2, y0 + bh / 2), width, height)
            take.params.setdefault("mosaics", []).append(entry)
            out.append(Defect(kind="mosaic", start_frame=s, end_frame=e, box=(int(x0), int(y0), bw, bh)))
        elif kind in ("logo", "sticker"):
            size = round(rng.uniform(0.09, 0.13) * height) if kind == "logo" else round(rng.uniform(0.14, 0.22) * height)
            if kind == "logo":
                style = str(rng.choice(["graphic", "image", "pixelated", "text"]))
                mark = (ov.graphic_logo(rng, size) if style in ("graphic", "pixelated") else
                        ov.text_patch(str(rng.choice(["REEL", "TV5", "NEWS", "CINE"])), ov.font_for(rng), size // 2, "title")
                        if style == "text" else None)
                if style == "pixelated":
                    mark = ov.pixelated_logo(mark, max(3, size // 6))
                corner = int(rng.integers(4))
                take.params["logo"] = {"style": style, "mark": mark, "size": size, "corner": corner, "seed": int(rng.integers(1 << 30))}
                mw, mh = (size, size) if mark is None else (mark.shape[1], mark.shape[0])
                lx = px + round(0.03 * pw) if corner in (0, 2) else px + pw - mw - round(0.03 * pw)
                ly = py + round(0.04 * ph) if corner in (0, 1) else py + ph - mh - round(0.04 * ph)
                take.params["logo"]["xy"] = (lx, ly)
                out.append(Defect(kind="logo", start_frame=s, end_frame=e, box=(lx, ly, mw, mh), text=style))
            else:
                take.params["sticker"] = {"img": ov.sticker(rng, size), "phase": rng.uniform(0, 6.3), "xy": (
                    px + rng.uniform(0.15, 0.7) * pw, py + rng.uniform(0.15, 0.6) * ph)}
                out.append(Defect(kind="sticker", start_frame=s, end_frame=e, box=(px, py, pw, ph)))
        elif kind == "frozen":
            n = round(rng.uniform(*FREEZE_S) * fps)
            if e - s >= n + 2 * MARGIN:
                f = int(rng.integers(s + MARGIN, e - MARGIN - n + 1))
                freezes.append((f, f + n, str(rng.choice(["pause", "jump"]))))
                out.append(Defect(kind="frozen", start_frame=f, end_frame=f + n))
        elif kind == "black":
            n = round(rng.uniform(0.3, 0.8) * fps)
            if e - s >= n + 2 * MARGIN:
                b = int(rng.integers(s + MARGIN, e - MARGIN - n + 1))
                take.params["black"] = (b, b + n)
                out.append(Defect(kind="black", start_frame=b, end_frame=b + n))
        elif kind in ("subtitle", "caption_text"):
            out += _text(rng, kind, (s, e), picture, width, height, fps, text)
    return out


def _text(rng, kind, span, picture, width, height, fps, text) -> list[Defect]:
    s, e = span
    font = ov.font_for(rng)
    out, pos = [], s + int(rng.integers(0, round(0.4 * fps)))
    while pos < e - round(0.6 * fps):
        end = min(e, pos + round(rng.uniform(1.2, 2.5) * fps)) if kind == "subtitle" else e
        words = ov.random_sentence(rng) if kind == "subtitle" else ov.random_caption(rng)
        size = round(height * (0.055 if kind == "subtitle" else 0.08))
        patch = ov.text_patch(words, font, size, "subtitle" if kind == "subtitle" else "title")
        while patch.shape[1] > 0.94 * width:
            size -= 1
            patch = ov.text_patch(words, font, size, "subtitle" if kind == "subtitle" else "title")
        x = (width - patch.shape[1]) // 2
        bottom = picture[1] + picture[3]
        # Over a letterbox, subtitles sit on the bottom bar, often reaching into the picture.
        y = (min(height - patch.shape[0] - 2, bottom - patch.shape[0] // 3) if bottom < height
             else round(0.93 * height) - patch.shape[0]) if kind == "subtitle" else round(height * rng.choice([0.12, 0.4]))
        d = Defect(kind=kind, start_frame=pos, end_frame=end, box=(x, y, patch.shape[1], patch.shape[0]), text=words)
        text.append((d, {"patch": patch}))
        out.append(d)
        if kind != "subtitle":
            break
        pos = end + round(rng.uniform(0.2, 0.6) * fps)
    return out
