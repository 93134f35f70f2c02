"""How shots are joined (cuts, dissolves, fades through black) and the hard negatives of shot
detection (fast pans, flashes, objects crossing the frame), which are *not* boundaries.

Boundary truth convention (truth.Transition): a cut has ``start == end ==`` the new shot's first
frame; a gradual transition's ``[start, end)`` are its mixed frames. Mixed frames keep both shots
moving: the outgoing shot's content runs on for ``tail`` frames and the incoming shot's starts
``lead`` frames early, as when an editor overlaps two takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from tasks.corpus.lib.truth import HardNegative, Transition, TransitionKind

JOIN_WEIGHTS: dict[TransitionKind, float] = {"cut": 0.6, "dissolve": 0.22, "fade": 0.18}  # ~60% cuts / 40% gradual
DISSOLVE_FRAMES = (8, 24)  # at 24 fps, scaled with the frame rate
FADE_HALF_FRAMES = (6, 12)  # fade-out frames, then fade-in frames
HARD_NEGATIVE_SHARE = 0.3  # shots that carry one hard negative
HARD_NEGATIVE_WEIGHTS = {"fast_pan": 0.3, "flash": 0.35, "crossing_object": 0.35}
FLASH_STRENGTH = (0.85, 0.5)  # white mix of the two flash frames (a camera flash and its decay)
CROSSING_SECONDS = (0.4, 0.7)


@dataclass(frozen=True)
class Join:
    kind: TransitionKind
    tail: int  # outgoing-shot content frames used by the transition
    lead: int  # incoming-shot content frames used by the transition
    length: int  # timeline frames of the transition (0 for a cut)


@dataclass(frozen=True)
class Layout:
    shots: tuple[tuple[int, int], ...]  # clean [start, end) per shot
    transitions: tuple[Transition, ...]
    joins: tuple[Join, ...]
    content_start: tuple[int, ...]  # timeline frame showing each shot's content frame 0
    spans: tuple[int, ...]  # content frames rendered per shot (clean + transition frames)
    num_frames: int


def _scaled(rng: np.random.Generator, frames: tuple[int, int], fps: float) -> int:
    return max(3, round(rng.integers(frames[0], frames[1] + 1) * fps / 24))


def plan_joins(rng: np.random.Generator, n_shots: int, fps: float) -> list[Join]:
    joins = []
    for _ in range(n_shots - 1):
        kind = str(rng.choice(list(JOIN_WEIGHTS), p=list(JOIN_WEIGHTS.values())))
        if kind == "dissolve":
            n = _scaled(rng, DISSOLVE_FRAMES, fps)
            joins.append(Join("dissolve", n, n, n))
        elif kind == "fade":
            out, into = _scaled(rng, FADE_HALF_FRAMES, fps), _scaled(rng, FADE_HALF_FRAMES, fps)
            joins.append(Join("fade", out, into, out + into))
        else:
            joins.append(Join("cut", 0, 0, 0))
    return joins


def make_layout(clean_lengths: list[int], joins: list[Join]) -> Layout:
    """Lay clean shot ranges and transitions end to end so they tile ``[0, num_frames)``."""
    shots, transitions, content_start, spans, pos = [], [], [], [], 0
    for j, length in enumerate(clean_lengths):
        lead = joins[j - 1].lead if j else 0
        tail = joins[j].tail if j < len(joins) else 0
        shots.append((pos, pos + length))
        content_start.append(pos - lead)
        spans.append(lead + length + tail)
        pos += length
        if j < len(joins):
            transitions.append(Transition(kind=joins[j].kind, start_frame=pos, end_frame=pos + joins[j].length))
            pos += joins[j].length
    return Layout(tuple(shots), tuple(transitions), tuple(joins), tuple(content_start), tuple(spans), pos)


def frame_recipes(lay: Layout) -> list[tuple[tuple[int, float], ...]]:
    """Per timeline frame: which shots' content frames it is made of, and with what weight."""
    recipes: list[tuple[tuple[int, float], ...]] = []
    for j, (start, end) in enumerate(lay.shots):
        recipes += [((j, 1.0),)] * (end - start)
        if j == len(lay.joins):
            break
        join = lay.joins[j]
        for k in range(join.length):
            if join.kind == "dissolve":  # linear cross-fade; no mixed frame equals either shot
                alpha = (k + 1) / (join.length + 1)
                recipes.append(((j, 1 - alpha), (j + 1, alpha)))
            elif k < join.tail:  # fade out, reaching pure black on the last fade-out frame
                recipes.append(((j, 1 - (k + 1) / join.tail),))
            else:  # fade in from black
                recipes.append(((j + 1, (k - join.tail + 1) / (join.lead + 1)),))
    return recipes


def blend(parts: list[tuple[np.ndarray, float]]) -> np.ndarray:
    if len(parts) == 1 and parts[0][1] == 1.0:
        return parts[0][0]
    acc = sum(frame.astype(np.float32) * weight for frame, weight in parts)
    return np.clip(acc + 0.5, 0, 255).astype(np.uint8)


def place_inside(rng: np.random.Generator, span: tuple[int, int], length: int, margin: int) -> int | None:
    """A start frame for ``length`` frames inside ``span`` keeping ``margin`` frames from both ends
    (i.e. from any transition), or None when the shot is too short."""
    lo, hi = span[0] + margin, span[1] - margin - length
    return int(rng.integers(lo, hi + 1)) if hi >= lo else None


@dataclass(frozen=True)
class PlannedHardNegative:
    shot: int
    truth: HardNegative
    params: dict = field(default_factory=dict)


def plan_hard_negatives(
    rng: np.random.Generator, lay: Layout, fps: float, margin: int, excluded: set[int]
) -> list[PlannedHardNegative]:
    """At most one per shot. A fast pan spans the whole clean shot (its camera is forced to a whip
    pan); flashes and crossings sit inside the shot, ``margin`` frames from any transition."""
    planned = []
    for j, span in enumerate(lay.shots):
        if j in excluded or rng.random() >= HARD_NEGATIVE_SHARE:
            continue
        kind = str(rng.choice(list(HARD_NEGATIVE_WEIGHTS), p=list(HARD_NEGATIVE_WEIGHTS.values())))
        length = {"fast_pan": span[1] - span[0], "flash": len(FLASH_STRENGTH),
                  "crossing_object": max(6, round(rng.uniform(*CROSSING_SECONDS) * fps))}[kind]
        start = span[0] if kind == "fast_pan" else place_inside(rng, span, length, margin)
        if start is None:
            continue
        params = {}
        if kind == "crossing_object":
            params = {"direction": int(rng.choice([-1, 1])), "width": float(rng.uniform(0.6, 0.85)),
                      "color": tuple(int(c) for c in rng.integers(10, 70, 3)),
                      "band": tuple(int(c) for c in rng.integers(40, 160, 3))}
        truth = HardNegative(kind=kind, start_frame=start, end_frame=start + length)
        planned.append(PlannedHardNegative(j, truth, params))
    return planned


def _crossing(frame: np.ndarray, k: int, n: int, params: dict) -> None:
    """A near, out-of-focus body (a passer-by, a bus) sweeping across the whole frame height.
    It moves (w + ow) / (n + 1) per frame, so it covers more than half the frame for ~n/2 frames."""
    h, w = frame.shape[:2]
    ow = round(params["width"] * w)
    left = round(-ow + (w + ow) * (k + 1) / (n + 1))
    if params["direction"] < 0:
        left = w - left - ow
    cv2.rectangle(frame, (left, 0), (left + ow, h), params["color"], -1)
    cv2.rectangle(frame, (left + ow // 5, h // 3), (left + ow - ow // 5, h // 3 + h // 4), params["band"], -1)


def apply_hard_negatives(frame: np.ndarray, i: int, planned: list[PlannedHardNegative]) -> np.ndarray:
    for p in planned:
        start, end = p.truth.start_frame, p.truth.end_frame
        if not start <= i < end:
            continue
        if p.truth.kind == "flash":
            frame = cv2.addWeighted(frame, 1 - FLASH_STRENGTH[i - start], np.full_like(frame, 255),
                                    FLASH_STRENGTH[i - start], 0)
        elif p.truth.kind == "crossing_object":
            frame = frame.copy()
            _crossing(frame, i - start, end - start, p.params)
    return frame
