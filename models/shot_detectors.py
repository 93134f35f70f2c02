"""Shot-boundary evidence over one decode (report section 3.1, ShotSegmentation with PySceneDetect
and TransNetV2), plus the content test that keeps false boundaries out.

Three detectors see the same frames:
- ``adaptive``: PySceneDetect's :class:`AdaptiveDetector` (its own class, fed our small frames);
  its cuts are candidates.
- ``content``: colour-palette histograms of the 48x27 frames. A shot change is where no frame
  shortly before resembles any frame shortly after, the two sides held ``gap`` frames apart so a
  dissolve or a fade fits between them (:func:`gap_change`); sudden single-frame changes are cut
  candidates (:func:`cut_change`).
- ``transnet``: TransNetV2 (:mod:`models.transnet`), on every frame (``transnet_mode="full"``) or
  only where the cheap evidence is ambiguous (``"arbiter"``; on 2 CPU cores TransNetV2 scores
  ~600 frames/s, far below decoding, so running it everywhere would dominate the stage).

Every candidate, whichever detector proposed it, must show different content before and after it:
the sides skip unlit frames and look past a few frames, so black runs, frozen runs and flashes
inside one shot never become boundaries while a fade through black between two shots does.
Palette distances rather than pixel distances keep camera motion (pans, objects crossing the frame)
from looking like new shots.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

HUE_BINS = 16
LIT_VALUE = 24  # HSV value under which a pixel is unlit: black frames, bars, the dark end of a fade
CHROMA_SAT = 40  # saturation under which hue is noise: such pixels go to four grey bins
DARK_SHARE = 0.05  # frames with fewer lit pixels carry no content and are skipped by every test
PRESENT = 0.005  # share of lit pixels above which a colour counts as present in a frame
NUM_BINS = 4 + HUE_BINS * 4  # grey levels, then hue x (saturation low/high) x (value low/high)
SIDE_FRAMES = 4  # frames compared on each side of a cut candidate
SIDE_REACH_S = 0.5  # how far a side may look for lit frames (past a black run, a flash), seconds
SPIKE_CHANGE = 0.3  # frame-to-frame histogram change that makes a cut candidate
CLEAN_RATIO = 3.0  # a clean cut's frame change is this many times its neighbours' (camera motion)
CUT_JUMP = 0.4  # least share of the way from one side to the other a cut covers in its one frame
FROZEN_FRAMES, FROZEN_CHANGE = 3, 0.02  # frames that barely change (codec noise) before a jump: a freeze
RESUME_PROPORTION = 0.5  # most colour mass unchanged: a freeze resuming, not a cut away from a still shot
BLACK_RUN_S = 0.25  # unlit runs at least this long, entered and left abruptly, may be a black segment
ABRUPT = 0.7  # a cut into black keeps the last lit frame's brightness; a fade dims it first
FADE_REACH_S = 0.5  # unlit frames this close to a sudden change make it part of a fade, seconds


def frame_features(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[T, h, w, 3] uint8 RGB -> (histograms [T, NUM_BINS] over lit pixels summing to 1, dark [T])."""
    n = len(thumbs)
    hsv = cv2.cvtColor(thumbs.reshape(-1, thumbs.shape[2], 3), cv2.COLOR_RGB2HSV).reshape(n, -1, 3)
    hue, sat, val = (hsv[..., k].astype(np.int32) for k in range(3))
    chroma = 4 + (hue * HUE_BINS // 180) * 4 + (sat >= 128) * 2 + (val >= 128)
    bins = np.where(sat >= CHROMA_SAT, chroma, val >> 6)
    bins = np.where(val >= LIT_VALUE, bins, NUM_BINS)  # unlit pixels land in a discarded bin
    bins += (np.arange(n) * (NUM_BINS + 1))[:, None]
    counts = np.bincount(bins.ravel(), minlength=n * (NUM_BINS + 1)).reshape(n, NUM_BINS + 1)
    lit = counts[:, :NUM_BINS].sum(1)
    hist = counts[:, :NUM_BINS].astype(np.float32) / np.maximum(lit, 1)[:, None]
    return hist, lit < DARK_SHARE * hue.shape[1]


def prop_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of colour mass that differs (0 same histogram, 1 disjoint)."""
    return 0.5 * np.abs(a - b).sum(-1)


def palette_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of each frame's colours absent from the other: proportions may shift (a pan reframes
    the same set), new colours may not. 0 same palette, 1 disjoint palettes."""
    return 1.0 - 0.5 * ((a * (b >= PRESENT)).sum(-1) + (b * (a >= PRESENT)).sum(-1))


def frame_change(hist: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """Histogram change from the previous frame (0 for the first frame and around unlit ones)."""
    change = np.zeros(len(hist), np.float32)
    change[1:] = prop_distance(hist[1:], hist[:-1])
    change[1:][dark[1:] | dark[:-1]] = 0.0
    return change


def gap_change(hist: np.ndarray, dark: np.ndarray, gap: int, window: int) -> np.ndarray:
    """``S[i]`` = min palette distance over frame pairs ``p`` in ``[i-window, i-gap)`` and ``q`` in
    ``[i+gap, i+window)`` (unlit frames skipped; 0 where a side has no lit frame). High only when
    nothing after ``i`` looks like anything before it: a shot change no longer than ``2*gap``
    frames. Disturbances shorter than ``window - gap`` frames (black runs, flashes, an object
    crossing the frame) leave a clean pair on both sides, so they score low."""
    n = len(hist)
    present = (hist >= PRESENT).astype(np.float32)
    best = np.full(n, np.inf, np.float32)
    for d in range(2 * gap + 1, min(2 * window, n)):
        dist = 1.0 - 0.5 * ((hist[:-d] * present[d:]).sum(1) + (hist[d:] * present[:-d]).sum(1))
        dist[dark[:-d] | dark[d:]] = np.inf
        lo, hi = max(-window, gap - d), min(-gap, window - d)  # offsets of p from i
        padded = np.full(n + 2 * window, np.inf, np.float32)
        padded[window : window + n - d] = dist
        mins = sliding_window_view(padded, hi - lo).min(1)
        best = np.minimum(best, mins[np.arange(n) + window + lo])
    best[~np.isfinite(best)] = 0.0
    return best


def _lit_side(dark: np.ndarray, start: int, stop: int, count: int, last: bool) -> list[int]:
    frames = [i for i in range(max(0, start), min(len(dark), stop)) if not dark[i]]
    return frames[-count:] if last else frames[:count]


def cut_change(hist: np.ndarray, dark: np.ndarray, cut: int, reach: int) -> float:
    """Least histogram distance between the lit frames just before ``cut`` and those from ``cut`` on
    (``SIDE_FRAMES`` each, found within ``reach`` frames): low when the content after a flash, a
    black run or a frozen stretch is the content from before it. NaN when a side has no lit frame."""
    before = _lit_side(dark, cut - reach, cut, SIDE_FRAMES, last=True)
    after = _lit_side(dark, cut, cut + reach, SIDE_FRAMES, last=False)
    if not before or not after:
        return float("nan")
    return float(prop_distance(hist[before][:, None], hist[after][None]).min())


def resumes_frozen(hist: np.ndarray, dark: np.ndarray, cut: int, reach: int, threshold: float) -> bool:
    """True when ``cut`` ends a frozen run (``FROZEN_FRAMES`` + 1 identical lit frames) and the
    palette after it is the held frame's: the shot moving on from a freeze, however far it moved."""
    held = slice(max(0, cut - FROZEN_FRAMES - 1), cut)
    if cut <= FROZEN_FRAMES or dark[held].any():
        return False
    if prop_distance(hist[held][1:], hist[held][:-1]).max() > FROZEN_CHANGE:
        return False
    after = _lit_side(dark, cut, cut + reach, SIDE_FRAMES, last=False)
    if not after:
        return False
    # The same palette AND much of the same colour proportions: a static camera on a still scene holds
    # identical frames too, and a cut from it to another scene of similar colours keeps the palette
    # (real footage: two blue landscapes) while the proportions change wholesale.
    return (float(palette_distance(hist[cut - 1], hist[after]).min()) < threshold
            and float(prop_distance(hist[cut - 1], hist[after]).min()) < RESUME_PROPORTION)


def fit_ramp(r: np.ndarray) -> tuple[int, int]:
    """Least-squares ``[s, e)`` for ``r`` ~ 0 before ``s``, a linear ramp over ``[s, e)`` and 1 from
    ``e`` on: where a transition's mixed frames lie (``s == e``: a cut at ``s``)."""
    n = len(r)
    j = np.arange(n)
    c_r2, c_r, c_jr = (np.r_[0.0, np.cumsum(x)] for x in (r**2, r, j * r))
    c_one = np.r_[0.0, np.cumsum((1 - r) ** 2)]
    s, e = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    length = np.maximum(e - s, 1)
    ramp = (c_r2[e] - c_r2[s]) - 2.0 / length * ((c_jr[e] - c_jr[s]) - (s - 0.5) * (c_r[e] - c_r[s]))
    ramp += length / 3.0 - 1.0 / (12.0 * length)
    cost = c_r2[s] + (c_one[n] - c_one[e]) + np.where(e > s, ramp, 0.0)
    cost[e < s] = np.inf
    best = np.unravel_index(np.argmin(cost), cost.shape)
    return int(best[0]), int(best[1])


def _side_mean(hist: np.ndarray, dark: np.ndarray, start: int, stop: int) -> np.ndarray | None:
    lit = [i for i in range(max(0, start), min(len(hist), stop)) if not dark[i]]
    return hist[lit].mean(0) if lit else None


def is_clean_cut(change: np.ndarray, dark: np.ndarray, cut: int, fade_reach: int) -> bool:
    """A cut happens in one frame: the change into ``cut`` dwarfs its neighbours' (motion), and no
    unlit frame lies within ``fade_reach`` (else it is the edge of a fade through black)."""
    near = np.r_[change[max(0, cut - 2) : cut], change[cut + 1 : cut + 3]]
    quiet = near.size == 0 or change[cut] >= CLEAN_RATIO * near.max()
    return bool(quiet and not dark[max(0, cut - fade_reach) : cut + fade_reach + 1].any())


def transition_span(
    hist: np.ndarray, dark: np.ndarray, peak: int, gap: int, window: int, cuts: list[int], fade_reach: int
) -> tuple[int, int]:
    """Frames of the transition around a :func:`gap_change` peak. Each frame gets its position ``r``
    between the two sides' mean histograms (0 like before, 1 like after, unlit frames halfway). A
    verified cut candidate near the peak where ``r`` jumps while its neighbours hold still (however
    fast the shots move) is a cut; otherwise :func:`fit_ramp` finds where ``r`` climbs."""
    before = _side_mean(hist, dark, peak - window, peak - gap)
    after = _side_mean(hist, dark, peak + gap, peak + window)
    if before is None or after is None:
        return peak, peak
    lo, hi = max(0, peak - window), min(len(hist), peak + window)
    to_before, to_after = prop_distance(hist[lo:hi], before), prop_distance(hist[lo:hi], after)
    r = to_before / np.maximum(to_before + to_after, 1e-6)
    r[dark[lo:hi]] = 0.5
    for cut in cuts:
        k = cut - lo
        if abs(cut - peak) > gap or not 2 <= k <= len(r) - 2 or dark[max(0, cut - fade_reach) : cut + fade_reach + 1].any():
            continue
        jump, wobble = r[k] - r[k - 1], max(abs(r[k - 1] - r[k - 2]), abs(r[k + 1] - r[k]))
        if jump >= CUT_JUMP and wobble <= 0.25 * jump:
            return cut, cut
    s, e = fit_ramp(r)
    return lo + s, lo + e


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of every run of True."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def black_runs(hist: np.ndarray, dark: np.ndarray, luma: np.ndarray, min_frames: int, reach: int,
               threshold: float) -> list[tuple[int, int]]:
    """``[a, b)`` of every black segment between two cuts: an unlit run of at least ``min_frames``
    frames, entered and left abruptly (the lit frames next to it are as bright as their neighbours:
    not the dimming of a fade) with different content before and after it (same content: black
    frames inside one shot). Both edges are cuts, and the run is no shot's."""
    found = []
    for a, b in runs(dark):
        if b - a < min_frames or a < 3 or b + 3 > len(dark) or dark[a - 3 : a].any() or dark[b : b + 3].any():
            continue
        if luma[a - 1] < ABRUPT * luma[a - 3 : a].max() or luma[b] < ABRUPT * luma[b : b + 3].max():
            continue
        change = cut_change(hist, dark, a, b - a + reach)
        if change == change and change >= threshold:
            found.append((a, b))
    return found
