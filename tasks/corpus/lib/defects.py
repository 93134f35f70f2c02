"""Planted defects: what the report's data filters must find (section 3.1: black / frozen frames,
subtitles and captions, mosaics, letter- and pillarboxes, logos, stickers, near-duplicates,
blur / noise / blocking quality problems).

Two levels, so that the truth stays exact:
- *footage* defects (mosaic, sticker, per-shot logo, blur, noise, blocking) belong to a shot's take:
  they are applied to every content frame the shot renders, so they also show, blended, in the
  adjacent gradual-transition frames; their recorded range is the shot's clean range.
- *timeline* defects (black, frozen, subtitle, caption_text, video-wide logo and bars) are drawn on
  the edited frames and their ranges are exact. Black and frozen segments keep a margin from every
  transition, so a fade through black is never next to a black defect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from tasks.corpus.lib.transitions import Layout, place_inside
from tasks.corpus.lib.truth import Defect, DefectKind

SENTENCES = (
    "I told you we should have left earlier.", "Where did you put the keys?", "The train leaves at nine.",
    "She never came back to the house.", "We can still make it if we run.", "Do you remember this place?",
    "Nobody knows what happened that night.", "Please close the door behind you.", "It is colder than last winter.",
    "He found the letter under the table.", "Let me show you the garden.", "They are waiting for us outside.",
    "I think the storm is coming.", "This is the best day of my life.", "Why are you still here?",
    "The river was quiet this morning.", "We need to talk about your brother.", "Turn off the lights and listen.",
    "You look tired, sit down.", "My father built this bridge.", "Keep walking and do not look back.",
    "The music stopped at midnight.", "I have never seen the sea.", "Come with me, it is not far.",
    "Everything will be fine tomorrow.", "The dog is sleeping in the sun.", "Call me when you get home.",
    "Hold my hand and close your eyes.", "We lost the game again.", "There is someone at the window.",
)
CAPTIONS = ("BREAKING NEWS", "CHAPTER ONE", "LIVE FROM THE CITY", "SUMMER IN THE MOUNTAINS", "ONE YEAR LATER",
            "THE END", "COMING SOON", "PART TWO", "THE NEXT MORNING", "WORLD NEWS TODAY")
WORDS = frozenset(w.lower() for text in SENTENCES + CAPTIONS for w in re.findall(r"[A-Za-z']+", text))
LOGOS = ("REEL", "TV5", "NEWS", "CINE", "SKY", "FILM+")
FONT = cv2.FONT_HERSHEY_DUPLEX

SHOT_DEFECT_WEIGHTS: dict[DefectKind, float] = {
    "black": 1.5, "frozen": 1.5, "subtitle": 1.5, "caption_text": 1.0, "mosaic": 1.0, "sticker": 0.8,
    "blur": 1.0, "noise": 1.0, "blocking": 1.0, "logo": 0.5,
}
FOOTAGE_KINDS = {"mosaic", "sticker", "logo", "blur", "noise", "blocking"}
TEMPORAL_KINDS = {"black", "frozen"}
BLACK_SECONDS, FROZEN_SECONDS = (0.12, 0.35), (0.3, 0.8)
SUBTITLE_SECONDS = (1.2, 2.5)
NOISE_FIELDS = 6  # per-frame grain cycles through a few precomputed fields
BLOCK = 8  # codec macroblock-like block size, in pixels
MOSAIC_CANDIDATES = 16  # random boxes tried per mosaic; the most visible one is planted
VIDEO_LOGO_SHARE, LETTERBOX_SHARE, PILLARBOX_SHARE, DUPLICATE_SHARE = 0.25, 0.1, 0.06, 0.35


@dataclass(frozen=True, eq=False)
class Planted:
    defect: Defect
    shot: int | None  # None: video-wide
    params: dict = field(default_factory=dict)


def _text_style(text: str, width: int, height: int, kind: str) -> tuple[float, int, int, int, int, int]:
    """Font scale, thickness, text width/height, baseline and padding; shrinks the font to fit."""
    scale = height / 360 * (1.4 if kind == "caption_text" else 0.9 if kind == "subtitle" else 0.7)
    thick = max(1, round(height / 240))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    if tw > 0.92 * width:
        scale *= 0.92 * width / tw
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    return scale, thick, tw, th, base, thick + 2


def _plan_text(rng, kind: str, text: str, width: int, height: int, span, corner: str | None = None) -> Defect:
    _, _, tw, th, base, pad = _text_style(text, width, height, kind)
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    if kind == "subtitle":  # centred, near the bottom
        x, y = (width - bw) // 2, round(height * 0.94) - bh
    elif kind == "caption_text":  # a title, upper third or centred
        x, y = (width - bw) // 2, round(height * rng.choice([0.12, 0.42]))
    else:  # logo in a corner
        x = round(width * 0.03) if corner in ("tl", "bl") else width - bw - round(width * 0.03)
        y = round(height * 0.04) if corner in ("tl", "tr") else height - bh - round(height * 0.04)
    return Defect(kind=kind, start_frame=span[0], end_frame=span[1], box=(int(x), int(y), bw, bh), text=text)


def _subtitles(rng, span: tuple[int, int], fps: float, width: int, height: int) -> list[Defect]:
    """Consecutive subtitle lines with short gaps, all inside the shot's clean range."""
    lines, pos = [], span[0] + int(rng.integers(0, max(1, round(0.4 * fps))))
    while pos < span[1] - 2:
        end = min(pos + round(rng.uniform(*SUBTITLE_SECONDS) * fps), span[1] - 2)
        if end - pos < round(0.6 * fps):
            break
        lines.append(_plan_text(rng, "subtitle", str(rng.choice(SENTENCES)), width, height, (pos, end)))
        pos = end + round(rng.uniform(0.2, 0.6) * fps)
    return lines


def _random_box(rng, width: int, height: int, lo: float, hi: float) -> tuple[int, int, int, int]:
    bw, bh = round(rng.uniform(lo, hi) * width), round(rng.uniform(lo, hi) * height)
    return int(rng.integers(0, width - bw + 1)), int(rng.integers(0, height - bh + 1)), bw, bh


def _sticker(rng, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright star, heart or smiley with an outline, as colour + alpha (h, w, 1)."""
    img, mask = np.zeros((size, size, 3), np.uint8), np.zeros((size, size), np.uint8)
    c, r, shape = size / 2, size / 2 - 1, rng.choice(["star", "heart", "smiley"])
    if shape == "smiley":
        cv2.circle(img, (round(c), round(c)), round(r), (0, 220, 255), -1, cv2.LINE_AA)
        cv2.circle(mask, (round(c), round(c)), round(r), 255, -1, cv2.LINE_AA)
        for dx in (-1, 1):
            cv2.circle(img, (round(c + dx * r / 3), round(c - r / 4)), max(1, round(r / 8)), (0, 0, 0), -1)
        cv2.ellipse(img, (round(c), round(c + r / 6)), (round(r / 2), round(r / 3)), 0, 20, 160, (0, 0, 0),
                    max(1, round(r / 10)))
    else:
        a = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        if shape == "star":
            a, rad = np.pi / 2 + np.arange(10) * np.pi / 5, np.where(np.arange(10) % 2 == 0, r, r * 0.45)
            xy = np.stack([rad * np.cos(a), -rad * np.sin(a)], 1)
        else:  # the classic parametric heart curve
            xy = np.stack([16 * np.sin(a) ** 3, -(13 * np.cos(a) - 5 * np.cos(2 * a) - 2 * np.cos(3 * a) - np.cos(4 * a))], 1)
            xy = xy * r / 17
        pts = [np.int32(np.round(xy + c))]
        cv2.fillPoly(img, pts, (0, 215, 255) if shape == "star" else (90, 40, 240), cv2.LINE_AA)
        cv2.fillPoly(mask, pts, 255, cv2.LINE_AA)
        cv2.polylines(img, pts, True, (255, 255, 255), max(1, size // 16), cv2.LINE_AA)
    return img, mask.astype(np.float32)[..., None] / 255


def _footage_params(rng, kind: str, box, width: int, height: int) -> dict:
    if kind == "blur":
        return {"sigma": float(height / 90 * rng.uniform(1.0, 1.8))}
    if kind == "noise":
        sigma = float(rng.uniform(12, 28))
        return {"sigma": sigma, "fields": [np.int16(rng.normal(0, sigma, (height, width, 1)).round())
                                           for _ in range(NOISE_FIELDS)]}
    if kind == "blocking":
        return {"detail": float(rng.uniform(0.2, 0.45))}
    if kind == "mosaic":
        return {"cell": mosaic_cell(box)}
    if kind == "sticker":
        img, alpha = _sticker(rng, box[2])
        return {"img": img, "alpha": alpha}
    return {}


def pixelate(region: np.ndarray, cell: int) -> np.ndarray:
    """The region as a mosaic of about ``cell``-pixel cells (area mean per cell, blown back up)."""
    bh, bw = region.shape[:2]
    small = cv2.resize(region, (max(1, bw // cell), max(1, bh // cell)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (bw, bh), interpolation=cv2.INTER_NEAREST)


def mosaic_visibility(greys: list[np.ndarray], box: tuple[int, int, int, int]) -> float:
    """Mean absolute change (luma levels) that pixelating ``box`` makes to these grey (float32) frames."""
    x, y, bw, bh = box
    cell = mosaic_cell(box)
    return float(np.mean([np.abs(pixelate(g[y:y + bh, x:x + bw], cell) - g[y:y + bh, x:x + bw]).mean() for g in greys]))


def mosaic_cell(box: tuple[int, int, int, int]) -> int:
    return max(3, min(box[2], box[3]) // 6)


def _mosaic_box(rng: np.random.Generator, width: int, height: int, frames: list[np.ndarray] | None) -> tuple:
    """A censoring mosaic covers something: of ``MOSAIC_CANDIDATES`` random boxes, the one whose
    pixelation changes the shot's frames most. A box over featureless backdrop would change no
    pixel, and a "defect" nobody can see is not one (report section 3.1: mosaics hide content)."""
    boxes = [_random_box(rng, width, height, 0.15, 0.35) for _ in range(MOSAIC_CANDIDATES if frames else 1)]
    if not frames:
        return boxes[0]
    greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32) for f in frames]  # once, not per box
    return max(boxes, key=lambda b: mosaic_visibility(greys, b))


def plan_shot_defects(
    rng: np.random.Generator, lay: Layout, fps: float, width: int, height: int, rate: float, margin: int,
    busy: set[int], static: set[int], skip: set[int], video_logo: bool,
    frames_of: Callable[[int], list[np.ndarray]] | None = None,
) -> list[Planted]:
    """With probability ``rate`` per shot, one defect (subtitles may be several lines). ``busy`` shots
    carry a flash or crossing (no black/frozen there), ``static`` shots have a still camera (no
    sticker, which is about overlays on moving content), ``skip`` shots get nothing.
    ``frames_of(j)``: a few content frames of shot ``j`` (mosaics are placed over detail); its random
    draws use their own generator, so the rest of the plan does not depend on it."""
    planted = []
    for j, span in enumerate(lay.shots):
        if j in skip or rng.random() >= rate:
            continue
        kinds = [k for k in SHOT_DEFECT_WEIGHTS
                 if not (k in TEMPORAL_KINDS and j in busy) and not (k == "sticker" and j in static)
                 and not (k == "logo" and video_logo)]
        weights = np.array([SHOT_DEFECT_WEIGHTS[k] for k in kinds])
        kind = str(rng.choice(kinds, p=weights / weights.sum()))
        if kind in TEMPORAL_KINDS:
            seconds = BLACK_SECONDS if kind == "black" else FROZEN_SECONDS
            length = max(2, round(rng.uniform(*seconds) * fps))
            start = place_inside(rng, span, length, margin)
            if start is not None:
                planted.append(Planted(Defect(kind=kind, start_frame=start, end_frame=start + length), j))
        elif kind == "subtitle":
            planted += [Planted(d, j) for d in _subtitles(rng, span, fps, width, height)]
        elif kind == "caption_text":
            planted.append(Planted(_plan_text(rng, kind, str(rng.choice(CAPTIONS)), width, height, span), j))
        elif kind == "logo":
            planted.append(Planted(_plan_text(rng, kind, str(rng.choice(LOGOS)), width, height, span,
                                              str(rng.choice(["tl", "tr", "bl", "br"]))), j))
        else:
            box = None
            if kind == "mosaic":
                box = _random_box(rng, width, height, 0.15, 0.35)  # keeps the plan's draws as they were
                if frames_of is not None:  # seeded from that draw: deterministic, and the plan's stream is untouched
                    box = _mosaic_box(np.random.default_rng([j, *box]), width, height, frames_of(j))
            elif kind == "sticker":
                side = round(rng.uniform(0.18, 0.3) * height)
                box = (int(rng.integers(0, width - side)), int(rng.integers(0, height - side)), side, side)
            defect = Defect(kind=kind, start_frame=span[0], end_frame=span[1], box=box)
            planted.append(Planted(defect, j, _footage_params(rng, kind, box, width, height)))
    return planted


def plan_video_defects(rng: np.random.Generator, num_frames: int, width: int, height: int,
                       black: list[tuple[int, int]], with_logo: bool) -> list[Planted]:
    """Video-wide bars (box = the picture area left between them) and a channel logo, which is
    absent only on planted black frames (those stay fully black), so its ranges skip them."""
    planted, draw = [], rng.random()
    if draw < LETTERBOX_SHARE:  # 2.39:1 inside the frame
        bar = max(2, round((height - width / 2.39) / 2))
        box = (0, bar, width, height - 2 * bar)
        planted.append(Planted(Defect(kind="letterbox", start_frame=0, end_frame=num_frames, box=box), None))
    elif draw < LETTERBOX_SHARE + PILLARBOX_SHARE:  # 4:3 inside the frame
        bar = max(2, round((width - height * 4 / 3) / 2))
        box = (bar, 0, width - 2 * bar, height)
        planted.append(Planted(Defect(kind="pillarbox", start_frame=0, end_frame=num_frames, box=box), None))
    if with_logo:
        logo = _plan_text(rng, "logo", str(rng.choice(LOGOS)), width, height, (0, num_frames),
                          str(rng.choice(["tl", "tr", "bl", "br"])))
        edges = [0] + [e for span in sorted(black) for e in span] + [num_frames]
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            if end > start:
                planted.append(Planted(logo.model_copy(update={"start_frame": start, "end_frame": end}), None))
    return planted


def logos_inside_picture(planted: list[Planted], width: int, height: int) -> list[Planted]:
    """Per-shot logos moved into the same corner of the picture left between bars. A logo burned into
    a take sits in the take's picture; drawn at the frame's corner it would lie under the bars the
    edit adds, and the truth would claim a logo nobody can see. No random draw: the plan's streams
    stay as they were."""
    bars = [p.defect.box for p in planted if p.defect.kind in ("letterbox", "pillarbox")]
    if not bars:
        return planted
    px, py, pw, ph = bars[0]
    out = []
    for p in planted:
        d = p.defect
        if d.kind == "logo" and p.shot is not None:
            x, y, bw, bh = d.box
            corner = ("t" if y + bh / 2 < height / 2 else "b") + ("l" if x + bw / 2 < width / 2 else "r")
            moved = _plan_text(None, "logo", d.text, pw, ph, (d.start_frame, d.end_frame), corner)
            mx, my, mw, mh = moved.box
            p = Planted(moved.model_copy(update={"box": (mx + px, my + py, mw, mh)}), p.shot, p.params)
        out.append(p)
    return out


def plan_duplicate(rng: np.random.Generator, n_shots: int) -> dict[int, int]:
    """At most one near-duplicate per video: {copy shot: original shot}, never adjacent, so the cut
    into the copy is still a real change of take."""
    if n_shots < 4 or rng.random() >= DUPLICATE_SHARE:
        return {}
    copy = int(rng.integers(2, n_shots))
    return {copy: int(rng.integers(0, copy - 1))}
