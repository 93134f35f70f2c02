"""Streaming shot segmentation of one video (report section 3.1): the three detectors of
:mod:`models.shot_detectors` over blocks of frames, each candidate held to the content test,
TransNetV2 as full detector or arbiter, then the merge rule of :mod:`models.shot_merge`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scenedetect import AdaptiveDetector, FrameTimecode

from infra.config import SegmentConfig
from models.shot_detectors import (
    BLACK_RUN_S,
    FADE_REACH_S,
    SIDE_FRAMES,
    SIDE_REACH_S,
    SPIKE_CHANGE,
    black_runs,
    cut_change,
    frame_change,
    frame_features,
    gap_change,
    is_clean_cut,
    resumes_frozen,
    runs,
    transition_span,
)
from models.shot_merge import Boundary, Candidate, enforce_min_shot, merge_candidates
from models.transnet import CONTEXT, TransNet


class ShotDetector:
    """Segments one video from a stream of frames: :meth:`push` them in decode order, then
    :meth:`finish`. Frames are analysed in blocks of ``cfg.block_frames`` with ``horizon`` frames of
    context kept on each side, so memory stays bounded at any video length."""

    def __init__(self, cfg: SegmentConfig, fps: float, transnet: TransNet | None = None):
        self.cfg, self.fps = cfg, fps
        self.gap = max(1, round(cfg.change_gap_s * fps))
        self.window = max(self.gap + 2, round(cfg.change_window_s * fps))
        self.horizon = 2 * self.window + CONTEXT
        self.fade_reach = max(1, round(FADE_REACH_S * fps))
        self.side_reach = max(SIDE_FRAMES + 2, round(SIDE_REACH_S * fps))
        self.black_min = max(3, round(BLACK_RUN_S * fps))
        self.transnet = transnet if cfg.use_transnet else None
        self.adaptive = AdaptiveDetector(
            adaptive_threshold=cfg.adaptive_threshold, min_scene_len=cfg.min_shot_frames,
            window_width=cfg.adaptive_window_width, min_content_val=cfg.adaptive_min_content_val,
        ) if cfg.use_adaptive else None
        self.frames = 0  # frames pushed
        self.done = 0  # frames whose candidates are final
        self.transnet_frames = 0  # frames TransNetV2 scored (context included)
        self.candidates: list[Candidate] = []
        self._adaptive_cuts: list[int] = []
        self._chunks: list[np.ndarray] = []
        self._chunks_start = 0  # frame index of the first buffered thumbnail
        self._budget = 0.0  # frames TransNetV2 may have scored by the end of the current block

    def push(self, thumbs: np.ndarray, analysis: Sequence[np.ndarray] = ()) -> None:
        """``thumbs``: [n, 27, 48, 3] RGB; ``analysis``: the same n frames as BGR for AdaptiveDetector."""
        if self.adaptive is not None:
            for k, image in enumerate(analysis):
                cuts = self.adaptive.process_frame(FrameTimecode(self.frames + k, self.fps), image)
                self._adaptive_cuts += [c.frame_num for c in cuts]
        self._chunks.append(thumbs)
        self.frames += len(thumbs)
        while self.frames - self.done >= self.cfg.block_frames + self.horizon:
            self._analyse(self.done + self.cfg.block_frames, self.done + self.cfg.block_frames + self.horizon)

    def finish(self) -> list[Boundary]:
        if self.frames > self.done:
            self._analyse(self.frames, self.frames)
        enabled = {"content"} | {name for name, on in (("adaptive", self.adaptive), ("transnet", self.transnet)) if on}
        merged = merge_candidates(self.candidates, self.cfg.merge, self.cfg.merge_tolerance_frames, enabled)
        return enforce_min_shot(merged, self.cfg.min_shot_frames)

    def _thumbs(self, start: int, stop: int) -> np.ndarray:
        buffered = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks = [buffered]
        return buffered[start - self._chunks_start : stop - self._chunks_start]

    def _analyse(self, core_end: int, stop: int) -> None:
        start = max(0, self.done - self.horizon)
        thumbs = self._thumbs(start, stop)
        self._budget = self.cfg.arbiter_budget * core_end  # by block ends: the same for any push sizes
        probs = None
        if self.transnet is not None and self.cfg.transnet_mode == "full":
            probs = self.transnet.predict(thumbs)
            self.transnet_frames += len(thumbs)
        found = self._evidence(thumbs, probs, self.done - start, core_end - start)
        self.candidates += [replace(c, start=c.start + start, end=c.end + start) for c in found]
        self.done = core_end
        keep_from = max(0, core_end - self.horizon)
        self._chunks = [self._thumbs(keep_from, self.frames)]
        self._chunks_start = keep_from
        self._adaptive_cuts = [c for c in self._adaptive_cuts if c >= core_end]

    def _decide(self, value: float, threshold: float, span: tuple[int, int], thumbs, probs) -> bool:
        """Clear evidence decides alone. Evidence within ``arbiter_margin`` of ``threshold`` goes to
        TransNetV2: its full-video scores, or (arbiter mode) a run over the span and its context
        while TransNetV2 has scored under ``arbiter_budget`` of the frames; else to the threshold."""
        margin = self.cfg.arbiter_margin
        if value >= threshold + margin or value < threshold - margin or self.transnet is None:
            return value >= threshold
        lo, hi = max(0, span[0] - 2), min(len(thumbs), span[1] + 3)
        if probs is None:
            ctx_lo, ctx_hi = max(0, lo - CONTEXT), min(len(thumbs), hi + CONTEXT)
            if self.transnet_frames + ctx_hi - ctx_lo > self._budget:
                return value >= threshold
            probs = np.zeros(len(thumbs), np.float32)
            probs[ctx_lo:ctx_hi] = self.transnet.score(thumbs[ctx_lo:ctx_hi])
            self.transnet_frames += ctx_hi - ctx_lo
        return bool(probs[lo:hi].max() >= self.cfg.transnet_threshold)

    def _evidence(self, thumbs: np.ndarray, probs, core_lo: int, core_hi: int) -> list[Candidate]:
        """Verified candidates anchored in ``[core_lo, core_hi)`` of this block (block-relative)."""
        cfg = self.cfg
        hist, dark = frame_features(thumbs)
        change = frame_change(hist, dark)
        start = self.done - core_lo  # absolute index of block frame 0
        neighbourhood = sliding_window_view(np.pad(change, 3), 7).max(1)
        spikes = {int(i) for i in np.flatnonzero((change >= SPIKE_CHANGE) & (change >= neighbourhood))
                  if core_lo <= i < core_hi}
        adaptive = {c - start for c in self._adaptive_cuts if core_lo <= c - start < core_hi}
        strength = {c: 0.0 if resumes_frozen(hist, dark, c, self.side_reach, cfg.change_threshold)
                    else cut_change(hist, dark, c, self.side_reach) for c in sorted(spikes | adaptive)}
        strong = sorted(c for c, v in strength.items() if v >= cfg.cut_threshold)
        clean = [c for c in strong if is_clean_cut(change, dark, c, self.fade_reach)]

        luma = thumbs.reshape(len(thumbs), -1).mean(1)
        blacks = black_runs(hist, dark, luma, self.black_min, self.side_reach, cfg.cut_threshold)
        regions: list[Candidate] = []
        change_gap = gap_change(hist, dark, self.gap, self.window)
        for cut in clean:  # a clean cut explains every palette change the test sees around it
            change_gap[max(0, cut - self.window + 1) : cut + self.window] = 0.0
        for a, b in blacks:  # so do the two cuts of a black segment
            change_gap[max(0, a - self.window + 1) : b + self.window] = 0.0
        low = cfg.change_threshold - cfg.arbiter_margin
        for a, b in runs(change_gap >= low):
            peak = a + int(np.argmax(change_gap[a:b]))
            if not core_lo <= peak < core_hi:
                continue
            span = transition_span(hist, dark, peak, self.gap, self.window, strong, self.fade_reach)
            # TransNetV2 is asked about the frames near the peak only: a weak region's ramp can
            # stretch over a neighbouring boundary that is not its own.
            ask_lo = max(span[0], peak - self.gap)
            if self._decide(float(change_gap[peak]), cfg.change_threshold, (ask_lo, max(ask_lo, min(span[1], peak + self.gap))), thumbs, probs):
                regions.append(Candidate("content", *span, float(change_gap[peak])))

        found = list(regions) + [Candidate("content", a, b, float(cut_change(hist, dark, a, b - a + self.side_reach)), True)
                                 for a, b in blacks if core_lo <= a < core_hi]
        tolerance = cfg.merge_tolerance_frames
        for cut, value in strength.items():
            if cut in clean:
                found.append(Candidate("content", cut, cut, value))
            if cut not in adaptive:
                continue
            # Inside a region's transition (a fade's edge) a cut candidate needs no verdict of its own.
            if any(r.start - tolerance <= cut <= r.end + tolerance for r in regions):
                keep = value >= cfg.cut_threshold
            else:
                keep = cut in clean or self._decide(value, cfg.cut_threshold, (cut, cut), thumbs, probs)
            if keep:
                found.append(Candidate("adaptive", cut, cut, value))

        if probs is not None:  # TransNetV2's own transitions, held to the same content test
            for a, b in runs(probs >= cfg.transnet_threshold):
                if not core_lo <= a < core_hi:
                    continue
                if b - a <= 2:
                    cut = a + 1  # TransNetV2 marks the last frame(s) before the new shot
                    ok = (cut_change(hist, dark, cut, self.side_reach) >= cfg.cut_threshold - cfg.arbiter_margin
                          and not resumes_frozen(hist, dark, cut, self.side_reach, cfg.change_threshold))
                    span = (cut, cut)
                else:
                    ok = change_gap[max(0, a - self.gap) : b + self.gap].max() >= low
                    span = (a, b)
                if ok:
                    found.append(Candidate("transnet", *span, float(probs[a:b].max())))
        return found
