"""Merging per-detector shot-boundary candidates into boundaries and boundaries into shots
(report section 3.1: ``ShotSegmentation(D_raw, detector=[PySceneDetect, TransNetV2])``).

A candidate is one detector's claim that a shot changes in ``[start, end)``: a cut has
``start == end`` (the first frame of the new shot), a gradual transition lists its mixed frames.
Candidates reach this module already verified against the content before and after them
(:mod:`models.shot_detectors`), so the rules here only decide how detectors combine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Rule = Literal["union", "transnet_confirmed", "vote"]
# Which detector's span and kind a merged boundary takes when several saw it: the content
# detector fits the transition's ramp, TransNetV2 marks frames, the adaptive detector one frame.
PRIORITY = ("content", "transnet", "adaptive")


@dataclass(frozen=True)
class Candidate:
    detector: str  # "adaptive" | "content" | "transnet"
    start: int
    end: int  # == start for a cut
    score: float  # the detector's confidence, 0..1
    black: bool = False  # [start, end) is a black run between two cuts (a cut at each edge)


@dataclass(frozen=True)
class Boundary:
    start: int  # first transition frame; for a cut the first frame of the new shot
    end: int  # exclusive end of the transition frames; == start for a cut
    score: float
    detectors: tuple[str, ...]
    black: bool = False  # a black run [start, end) between two cuts: no shot's frames, cuts on both sides

    @property
    def kind(self) -> Literal["cut", "gradual"]:
        """A black run's shots both meet it at a cut (one shot cuts to black, the next cuts in)."""
        return "cut" if self.end == self.start or self.black else "gradual"


def _cluster(candidates: list[Candidate], tolerance: int) -> list[list[Candidate]]:
    """Group candidates whose spans lie within ``tolerance`` frames of each other."""
    clusters: list[list[Candidate]] = []
    reach = -(10**9)
    for cand in sorted(candidates, key=lambda c: (c.start, c.end)):
        if clusters and cand.start <= reach + tolerance:
            clusters[-1].append(cand)
            reach = max(reach, cand.end)
        else:
            clusters.append([cand])
            reach = cand.end
    return clusters


def _accepted(detectors: set[str], rule: Rule, enabled: set[str]) -> bool:
    if rule == "union":
        return True
    if rule == "transnet_confirmed":
        return "transnet" in detectors or "transnet" not in enabled
    return len(detectors) >= min(2, len(enabled))  # vote


def merge_candidates(
    candidates: list[Candidate], rule: Rule, tolerance: int, enabled: set[str]
) -> list[Boundary]:
    """One boundary per cluster of agreeing candidates that passes ``rule``:
    ``union`` keeps every cluster, ``vote`` needs two detectors (of those enabled),
    ``transnet_confirmed`` needs TransNetV2 among them (when TransNetV2 ran)."""
    boundaries = []
    for cluster in _cluster(candidates, tolerance):
        detectors = {c.detector for c in cluster}
        if not _accepted(detectors, rule, enabled):
            continue
        # A black run's span is exact (its unlit frames); the detectors' cuts at its edges are its own.
        lead = min(cluster, key=lambda c: (not c.black, PRIORITY.index(c.detector), -c.score))
        boundaries.append(
            Boundary(lead.start, lead.end, max(c.score for c in cluster), tuple(sorted(detectors)), lead.black)
        )
    return boundaries


def enforce_min_shot(boundaries: list[Boundary], min_shot_frames: int) -> list[Boundary]:
    """Join boundaries that leave fewer than ``min_shot_frames`` clean frames between them into one
    gradual transition: such a sliver is a transition's middle, not a shot."""
    out: list[Boundary] = []
    for b in sorted(boundaries, key=lambda b: b.start):
        if out and b.start - out[-1].end < min_shot_frames and not (b.black or out[-1].black):
            prev = out.pop()
            b = Boundary(
                min(prev.start, b.start),
                max(prev.end, b.end),
                max(prev.score, b.score),
                tuple(sorted(set(prev.detectors) | set(b.detectors))),
            )
        out.append(b)
    return out


@dataclass(frozen=True)
class ShotSpan:
    start: int  # clean range, transition frames excluded
    end: int  # exclusive
    boundary_in: Boundary | None  # None: the video's start
    boundary_out: Boundary | None  # None: the video's end


def boundaries_to_shots(boundaries: list[Boundary], num_frames: int) -> list[ShotSpan]:
    """Clean shot ranges between consecutive boundaries; empty ranges are dropped."""
    shots, start, previous = [], 0, None
    for b in sorted(boundaries, key=lambda b: b.start):
        if b.start > start:
            shots.append(ShotSpan(start, b.start, previous, b))
        start, previous = max(start, b.end), b
    if num_frames > start:
        shots.append(ShotSpan(start, num_frames, previous, None))
    return shots
