"""Clips: cut each source's shots into training clips (report section 3.1, "clip segmentation").

Rules per shot, in order: drop ``trim_frames`` at each edge that borders a hard cut (detector
jitter; gradual transitions are already excluded by the segmenter), drop what is shorter than
``min_seconds``, split what is longer than ``max_seconds`` into near-equal parts. Each source is
decoded once for all its clips and every clip is re-encoded, so clip frame k is source frame
``start_frame + k`` exactly (stream copy could only cut at keyframes).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time

from infra import manifest as mf
from infra import storage
from infra.config import ClipsConfig
from infra.contact_sheet import contact_sheet
from infra.errors import TransientError, is_transient, retry, surface_transient
from infra.image import load_image
from infra.manifest import Manifest
from infra.raydata import flat_map_items
from infra.shards import PARTS, Shards
from infra.stage import StageContext, StageWork, run_stage
from infra.tables import CLIPS_SCHEMA
from infra.video import VideoWriter, iter_frames

_EPS = 1e-9  # float seconds * fps may land a hair below an exact frame count


def clip_id(source_id: str, start_frame: int, end_frame: int) -> str:
    return hashlib.sha256(f"{source_id}:{start_frame}:{end_frame}".encode()).hexdigest()[:16]


def plan_ranges(shot: dict, cfg: ClipsConfig) -> tuple[list[tuple[int, int]], str | None]:
    """Source frame ranges ``[start, end)`` for one shot, or ``([], why)`` when it yields none."""
    fps = float(shot["fps"])
    if fps <= 0:
        return [], f"no frame rate ({fps}); re-run ingest on this source"
    start = shot["start_frame"] + (cfg.trim_frames if shot["boundary_in_kind"] == "cut" else 0)
    end = shot["end_frame"] - (cfg.trim_frames if shot["boundary_out_kind"] == "cut" else 0)
    length = end - start
    min_frames = math.ceil(cfg.min_seconds * fps - _EPS)
    max_frames = math.floor(cfg.max_seconds * fps + _EPS)
    if max_frames < min_frames:
        return [], f"no whole number of frames at {fps} fps lies within [min_seconds, max_seconds]"
    if length < min_frames:
        return [], (
            f"too short: {max(length, 0)} frames ({max(length, 0) / fps:.2f} s) after trimming "
            f"< min_seconds {cfg.min_seconds}"
        )
    parts = math.ceil(length / max_frames)
    if length // parts < min_frames:
        # e.g. min 6, max 10 frames, length 11: halves of 5 would both be too short, so keep one
        # clip of max length and drop the tail.
        parts -= 1
        length = parts * max_frames
    bounds = [start + round(i * length / parts) for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True)), None


def _even(n: int) -> int:
    """yuv420p needs even sizes: odd sources lose their last row/column (see ``_crop``)."""
    return n - n % 2 if n > 0 else n


def _row(source: dict, shot: dict, start: int, end: int, final_dir: str, error: str | None) -> dict:
    cid = clip_id(source["source_id"], start, end)
    return {
        "clip_id": cid,
        "source_id": source["source_id"],
        "source_uri": source["source_uri"],
        "media": source.get("media") or "video",
        "shot_id": shot["shot_id"],
        "start_frame": start,
        "end_frame": end,
        "fps": float(source["fps"]),
        "width": _even(int(source["width"])),
        "height": _even(int(source["height"])),
        "num_frames": max(end - start, 0),
        "clip_uri": None if error else storage.join(final_dir, f"{cid}.mp4"),
        "error": error,
    }


def cut_clips(
    source: dict, shots: list[dict], cfg: ClipsConfig, write_dir: str, final_dir: str
) -> list[dict]:
    """Clip-table rows for one source; clips are written to ``write_dir`` and addressed under
    ``final_dir`` (the stage renames the one to the other on publish).

    A bad shot or a failed decode becomes rows with ``error`` set. A shot that yields no clip
    (too short) also becomes one row, with ``error`` saying why and no ``clip_uri``, so a data
    engineer can see why footage is missing from the pool. Faults of the machine (full disk, S3
    5xx) are retried, then raise :class:`TransientError`: never rows, or a rerun could not redo them.
    An image source is one 1-frame clip (an image sample for the joint image+video stages).
    """
    if source.get("media") == "image" and not source.get("error"):
        return _image_clip(source, cfg, write_dir, final_dir)
    rows, todo = [], []
    for shot in sorted(shots, key=_frame_range):
        start, end = _frame_range(shot)
        error = shot.get("error") or source.get("error")
        if not error:
            ranges, error = plan_ranges(shot, cfg)
            todo += [_row(source, shot, a, b, final_dir, None) for a, b in ranges]
        if error:
            rows.append(_row(source, shot, start, end, final_dir, error))
    if todo:
        _write_clips(source, todo, cfg, write_dir)
    return sorted(rows + todo, key=lambda r: (r["start_frame"], r["end_frame"]))


def _frame_range(shot: dict) -> tuple[int, int]:
    """A shot's ``[start, end)``; -1 where an errored shot carries no frames."""
    return tuple(-1 if shot.get(key) is None else int(shot[key]) for key in ("start_frame", "end_frame"))


def _write_clips(source: dict, todo: list[dict], cfg: ClipsConfig, write_dir: str) -> None:
    """Decode the source once, feeding one writer per clip; rows of clips that could not be
    finished get ``error`` set and ``clip_uri`` cleared. A transient fault restarts the source."""
    what = f"clips: writing the clips of {source['source_uri']}"
    written, error = retry(lambda: _encode_source(source, todo, cfg, write_dir), what)
    for row in todo:
        if row["clip_id"] not in written:
            row["clip_uri"] = None
            row["error"] = error or (
                f"{source['source_uri']}: the video ended before frame {row['end_frame']}; "
                "the segment table does not match this file, re-run segment"
            )


def _encode_source(source: dict, todo: list[dict], cfg: ClipsConfig, write_dir: str) -> tuple[set[str], str | None]:
    """(clip ids written, the input's error if its decode failed); transient faults propagate."""
    starts: dict[int, list[dict]] = {}
    for row in todo:
        starts.setdefault(row["start_frame"], []).append(row)
    remote = storage.is_remote(write_dir)
    active: dict[str, tuple[dict, VideoWriter]] = {}  # more than one only where shots overlap
    written: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="reelflow-clips-") as scratch:
        try:
            with storage.local_copy(source["source_uri"]) as path:
                first, last = min(starts), max(row["end_frame"] for row in todo)
                # One decode thread: an actor has one CPU, and nothing about the frames may vary.
                for index, frame in iter_frames(path, first, last, fmt=None, threads=False):
                    for row in starts.get(index, ()):
                        local = os.path.join(scratch, f"{row['clip_id']}.mp4") if remote else _clip_path(write_dir, row)
                        active[row["clip_id"]] = (row, _writer(local, row, cfg))
                    for cid, (row, writer) in list(active.items()):
                        writer.write(_crop(frame, row["width"], row["height"]))
                        if index + 1 == row["end_frame"]:
                            del active[cid]
                            _finish(writer, write_dir, cid, remote)
                            written.add(cid)
        except TransientError:
            raise
        except Exception as exc:  # corrupt mid-stream: rows, not a dead stage; a full disk is not the input's fault
            if is_transient(exc):
                raise
            return written, f"{source['source_uri']}: decoding or encoding failed ({type(exc).__name__}: {exc})"
        finally:
            for _, writer in active.values():
                writer.abort()
    return written, None


def _clip_path(write_dir: str, row: dict) -> str:
    return storage.join(write_dir, f"{row['clip_id']}.mp4")


def _writer(path: str, row: dict, cfg: ClipsConfig) -> VideoWriter:
    return VideoWriter(path, row["fps"], row["width"], row["height"], cfg.crf, cfg.preset, cfg.encoder_threads)


def _finish(writer: VideoWriter, write_dir: str, cid: str, remote: bool) -> None:
    writer.close()
    if remote:
        storage.upload(writer.path, storage.join(write_dir, f"{cid}.mp4"))
        os.unlink(writer.path)


IMAGE_CLIP_FPS = 24.0  # a still has no rate; the clip table needs one (a 1-frame clip, 1/24 s)


def _image_clip(source: dict, cfg: ClipsConfig, write_dir: str, final_dir: str) -> list[dict]:
    """One 1-frame clip of an image source, upright and cropped to even size."""
    shot = {"shot_id": None}
    row = _row({**source, "fps": IMAGE_CLIP_FPS}, shot, 0, 1, final_dir, None)

    def encode() -> None:
        with storage.local_copy(source["source_uri"]) as path:
            pixels = load_image(path)
        with tempfile.TemporaryDirectory(prefix="reelflow-clips-") as scratch:
            remote = storage.is_remote(write_dir)
            local = os.path.join(scratch, f"{row['clip_id']}.mp4") if remote else _clip_path(write_dir, row)
            writer = _writer(local, row, cfg)
            try:
                writer.write(pixels[: row["height"], : row["width"]])
            except BaseException:
                writer.abort()
                raise
            _finish(writer, write_dir, row["clip_id"], remote)

    def attempt() -> str | None:
        try:
            encode()
        except Exception as exc:
            if is_transient(exc):
                raise
            return f"{source['source_uri']}: image unreadable ({type(exc).__name__}: {exc})"
        return None

    error = retry(attempt, f"clips: writing the image clip of {source['source_uri']}")
    if error:
        row.update(clip_uri=None, error=error)
    return [row]


def _crop(frame, width: int, height: int):
    """An odd-sized decoded frame cropped to the writer's even size; others pass through."""
    if (frame.width, frame.height) == (width, height):
        return frame
    return frame.to_ndarray(format="rgb24")[:height, :width]


# --- stage -----------------------------------------------------------------------------------


class ClipsWorker:
    """Ray actor body: cut every clip of one source from a single decode."""

    def __init__(self, cfg: dict, write_dir: str, final_dir: str):
        self.cfg = ClipsConfig.model_validate(cfg)
        self.write_dir, self.final_dir = write_dir, final_dir

    def __call__(self, item: dict) -> list[dict]:
        return cut_clips(item["source"], item["shots"], self.cfg, self.write_dir, self.final_dir)


def run(ctx: StageContext, cfg: ClipsConfig, sources: Manifest, shots: Manifest) -> Manifest:
    """Stage ``clips``: frame-accurate H.264 clips of every usable shot, and the clip table."""

    def body(work: StageWork) -> Shards:
        by_source: dict[str, list[dict]] = {}
        for shot in mf.read_rows(shots):
            by_source.setdefault((shot["source_id"], shot["source_uri"]), []).append(shot)
        items = [{"source": src, "shots": by_source.get((src["source_id"], src["source_uri"]), [])}
                 for src in mf.read_rows(sources)]
        started = time.time()
        with surface_transient():  # a persistent fault fails the stage: nothing is published
            # the workers write the clip rows (one shard per source video); the driver keeps counts, not rows
            table = flat_map_items(items, ClipsWorker, {"cfg": cfg.model_dump(), "write_dir": work.tmp_uri,
                                                        "final_dir": work.final_uri}, CLIPS_SCHEMA,
                                   cfg.resources, stage="clips", shard_dir=storage.join(work.tmp_uri, PARTS))
        seconds = time.time() - started
        clips, frames, clip_seconds, picks = 0, 0, 0.0, []
        for r in table.column_values(["error", "num_frames", "fps", "source_uri", "start_frame", "end_frame",
                                      "clip_id"]):
            if r["error"] is None:
                clips, frames, clip_seconds = clips + 1, frames + r["num_frames"], clip_seconds + r["num_frames"] / r["fps"]
                if len(picks) < 16:  # thumbnails from the source (clip files are still in the unpublished temp folder)
                    picks.append((r["source_uri"], (r["start_frame"] + r["end_frame"]) // 2, r["clip_id"][:8]))
        work.metrics.update(clips=clips, clip_frames=frames, clip_seconds=clip_seconds,
                            encode_frames_per_s=frames / max(seconds, 1e-9))
        work.stats.update(clips=clips, clip_seconds=round(clip_seconds, 2))
        sheet = os.path.join(work.scratch_dir, "contact_sheet.png")
        contact_sheet(picks, sheet)
        work.artifacts.append(sheet)
        return table

    return run_stage(ctx, "clips", cfg, [sources, shots], body)

