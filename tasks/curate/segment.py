"""Segment: split every source into shots (report section 3.1, "ShotSegmentation(D_raw,
detector=[PySceneDetect, TransNetV2])").

Each video is decoded once (PyAV, codec threads on) in a background thread; swscale turns every
frame into the two small images the detectors want (``analysis_width`` BGR for PySceneDetect's
AdaptiveDetector, 48x27 RGB for TransNetV2 and the palette detector), so no full-size frame ever
reaches Python. :class:`models.shot_segmenter.ShotDetector` does the rest. A bad video yields one
row with ``error`` set; only a persistent fault of the machine (full disk, S3 5xx) raises.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from infra import manifest as mf
from infra import storage
from infra.config import SegmentConfig
from infra.contact_sheet import contact_sheet
from infra.errors import retry_input, surface_transient
from infra.manifest import Manifest
from infra.raydata import flat_map_items
from infra.shards import PARTS, Shards
from infra.stage import StageContext, StageWork, run_stage
from infra.tables import SHOTS_SCHEMA
from models.shot_merge import Boundary, boundaries_to_shots
from models.shot_segmenter import ShotDetector
from models.transnet import THUMB_SIZE, TransNet

BATCH_FRAMES = 64  # frames per hand-over from the decode thread
QUEUED_BATCHES = 4  # decode may run this far ahead: bounds memory
SCALE_THREADS = 1  # swscale slice threads cost more than they save on outputs this small (2x measured)


def shot_id(source_id: str, start: int, end: int) -> str:
    return hashlib.sha256(f"{source_id}:{start}:{end}".encode()).hexdigest()[:16]


def load_transnet(cfg: SegmentConfig) -> TransNet | None:
    return TransNet(device=cfg.transnet_device) if cfg.use_transnet else None


def analysis_size(width: int, height: int, analysis_width: int) -> tuple[int, int]:
    """``analysis_width`` wide (never wider than the source), aspect kept."""
    w = min(analysis_width, width)
    return w, max(1, round(height * w / width))


def decode_small(
    path: str, size: tuple[int, int], with_analysis: bool, scale_filter: str = "fast_bilinear"
) -> Iterator[tuple[np.ndarray, list]]:
    """Batches of (48x27 RGB thumbnails [n, 27, 48, 3], ``size`` BGR frames) from one decode, made in
    a background thread: decoding and scaling run in C there while this thread detects (~20% faster
    than taking turns, measured on 2 cores). When ``size`` is the thumbnail size, one swscale call
    serves both."""
    batches: queue.Queue = queue.Queue(QUEUED_BATCHES)
    stop = threading.Event()
    separate = with_analysis and tuple(size) != THUMB_SIZE
    scale = {"interpolation": scale_filter.upper(), "threads": SCALE_THREADS}

    def put(item) -> bool:
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def hand_over(thumbs: list, analysis: list) -> bool:
        stacked = np.stack(thumbs)
        if with_analysis and not separate:
            analysis = list(np.ascontiguousarray(stacked[..., ::-1]))  # RGB -> BGR for PySceneDetect
        return put((stacked, analysis))

    def produce() -> None:
        try:
            with av.open(path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                to_thumb, to_analysis = VideoReformatter(), VideoReformatter()
                thumbs, analysis = [], []
                for frame in container.decode(stream):
                    thumbs.append(to_thumb.reformat(frame, *THUMB_SIZE, "rgb24", **scale).to_ndarray())
                    if separate:
                        analysis.append(to_analysis.reformat(frame, *size, "bgr24", **scale).to_ndarray())
                    if len(thumbs) == BATCH_FRAMES:
                        if not hand_over(thumbs, analysis):
                            return
                        thumbs, analysis = [], []
                if thumbs and not hand_over(thumbs, analysis):
                    return
            put(None)
        except Exception as exc:  # handed to the consumer, which reports it as the video's error
            put(exc)

    worker = threading.Thread(target=produce, name="segment-decode", daemon=True)
    worker.start()
    try:
        while (item := batches.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def detect_boundaries(path: str, fps: float, cfg: SegmentConfig, transnet: TransNet | None) -> tuple[list[Boundary], int]:
    """Boundaries of a local video file and its decoded frame count."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        fps = fps or float(stream.average_rate or stream.guessed_rate or 24)
    detector = ShotDetector(cfg, fps, transnet)
    size = analysis_size(width, height, cfg.analysis_width)
    for thumbs, analysis in decode_small(path, size, cfg.use_adaptive, cfg.scale_filter):
        detector.push(thumbs, analysis)
    return detector.finish(), detector.frames


def _error_row(source: dict, message: str) -> dict:
    return {
        "shot_id": shot_id(source.get("source_id") or "", -1, -1), "source_id": source.get("source_id"),
        "source_uri": source.get("source_uri"), "shot_index": -1, "start_frame": -1, "end_frame": -1,
        "fps": source.get("fps"), "width": source.get("width"), "height": source.get("height"),
        "boundary_in_kind": None, "boundary_in_score": None, "boundary_out_kind": None,
        "boundary_out_score": None, "detected_by": None, "error": message,
    }


def segment_video(source: dict, cfg: SegmentConfig, detectors: TransNet | None = None) -> list[dict]:
    """One row per shot of ``source`` (a row of the ingest table). ``detectors``: the TransNetV2 a
    worker loaded once; None loads it for this call when ``cfg.use_transnet``."""
    if source.get("error"):
        return [_error_row(source, source["error"])]
    transnet = detectors if detectors is not None or not cfg.use_transnet else load_transnet(cfg)
    def detect() -> tuple[list[Boundary], int]:
        with storage.local_copy(source["source_uri"]) as path:
            return detect_boundaries(path, float(source.get("fps") or 0), cfg, transnet)

    # A machine fault (full disk, S3 5xx) is retried, then fails the stage; a bad video is a row.
    found, exc = retry_input(detect, f"segment: reading {source['source_uri']}")
    if exc is not None:
        return [_error_row(source, f"segment: decoding failed: {type(exc).__name__}: {exc}")]
    boundaries, num_frames = found
    if num_frames == 0:
        return [_error_row(source, "segment: the video decodes to zero frames")]
    rows = []
    for index, shot in enumerate(boundaries_to_shots(boundaries, num_frames)):
        b_in, b_out = shot.boundary_in, shot.boundary_out
        detected = sorted({d for b in (b_in, b_out) if b for d in b.detectors})
        rows.append({
            "shot_id": shot_id(source["source_id"], shot.start, shot.end), "source_id": source["source_id"],
            "source_uri": source["source_uri"], "shot_index": index, "start_frame": shot.start,
            "end_frame": shot.end, "fps": source.get("fps"), "width": source.get("width"),
            "height": source.get("height"),
            "boundary_in_kind": b_in.kind if b_in else "start", "boundary_in_score": b_in.score if b_in else 1.0,
            "boundary_out_kind": b_out.kind if b_out else "end", "boundary_out_score": b_out.score if b_out else 1.0,
            "detected_by": "+".join(detected) or None, "error": None,
        })
    return rows


class SegmentWorker:
    """For a Ray actor pool: loads TransNetV2 once, then segments one source per call."""

    def __init__(self, cfg: SegmentConfig | dict):
        self.cfg = SegmentConfig.model_validate(cfg)
        if self.cfg.torch_threads:
            import torch

            torch.set_num_threads(self.cfg.torch_threads)
        self.transnet = load_transnet(self.cfg)

    def __call__(self, source: dict) -> list[dict]:
        return segment_video(source, self.cfg, self.transnet)


# --- stage -----------------------------------------------------------------------------------


def run(ctx: StageContext, cfg: SegmentConfig, sources: Manifest) -> Manifest:
    """Stage ``segment``: one decode per video, PySceneDetect + TransNetV2, merged into shots."""

    def body(work: StageWork) -> Shards:
        items = mf.read_rows(sources)
        started = time.time()
        with surface_transient():  # a persistent fault fails the stage: nothing is published
            # the workers write the shot rows (one shard per video); the driver keeps counts, not rows
            table = flat_map_items(items, SegmentWorker, {"cfg": cfg.model_dump()}, SHOTS_SCHEMA, cfg.resources,
                                   stage="segment", shard_dir=storage.join(work.tmp_uri, PARTS))
        seconds = time.time() - started
        kinds = {"cut": 0, "gradual": 0}
        picks, shots = [], 0
        for s in table.column_values(["error", "boundary_in_kind", "source_uri", "start_frame", "shot_index"]):
            if s["error"] is None:
                shots += 1
                kinds[s["boundary_in_kind"]] = kinds.get(s["boundary_in_kind"], 0) + 1
                if len(picks) < 16:
                    picks.append((s["source_uri"], s["start_frame"],
                                  f"shot {s['shot_index']} in: {s['boundary_in_kind']}"))
        frames = sum(s["num_frames"] for s in items if s["error"] is None)
        work.metrics.update(shots=shots, cuts=kinds["cut"], gradual=kinds["gradual"],
                            frames=frames, frames_per_s=frames / max(seconds, 1e-9))
        work.stats.update(shots=shots, cuts=kinds["cut"], gradual=kinds["gradual"])
        sheet = os.path.join(work.scratch_dir, "contact_sheet.png")
        contact_sheet(picks, sheet)
        work.artifacts.append(sheet)
        return table

    return run_stage(ctx, "segment", cfg, [sources], body)
