"""Generation (report sections 5.4-5.5): a checkpoint folder and settings -> an mp4, plus lossless frames.

Reads the conditioning inputs (first/end image, a video to extend), picks the sampler from the checkpoint
(diffusion forcing, or the full-sequence pipeline of a T2V/I2V checkpoint) and streams the frames into the
outputs as windows finish, so a long video never sits in memory whole: the mp4 (`infra.video.VideoWriter`)
and, on request, a PNG sequence or one .npy of float32 frames in [0, 1] (for post-production and exact
comparison).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from infra.video import VideoWriter, iter_frames
from models.generate_config import GenerateConfig


def fit_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale to cover (height, width), keeping the aspect ratio, then center-crop: an (H, W, 3) uint8 frame."""
    from PIL import Image

    img = Image.fromarray(np.asarray(frame)).convert("RGB")
    if img.size != (width, height):
        scale = max(width / img.width, height / img.height)
        size = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC)
        left, top = (img.width - width) // 2, (img.height - height) // 2
        img = img.crop((left, top, left + width, top + height))
    return np.asarray(img, dtype=np.uint8)


def load_image(path: str, height: int, width: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return fit_frame(np.asarray(img.convert("RGB")), height, width)


def load_video(path: str, height: int, width: int) -> np.ndarray:
    """All frames of a local video, fitted to (height, width): (frames, height, width, 3) uint8."""
    frames = [fit_frame(frame, height, width) for _, frame in iter_frames(path)]
    if not frames:
        raise ValueError(f"{path}: no frames decoded; is it a video?")
    return np.stack(frames)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.asarray(frames, dtype=np.float32) * 255.0).round().clip(0, 255).astype(np.uint8)


class FrameSink:
    """Writes frame chunks to the mp4 and, when asked, to a PNG folder or a .npy file (float32, lossless)."""

    def __init__(self, out: str, fps: float, height: int, width: int, total: int, frames_out: str | None = None):
        self.writer = VideoWriter(out, fps, width, height)
        self.npy = self.png_dir = None
        self.count = 0
        if frames_out and frames_out.endswith(".npy"):
            Path(frames_out).parent.mkdir(parents=True, exist_ok=True)
            self.npy = np.lib.format.open_memmap(frames_out, mode="w+", dtype=np.float32,
                                                 shape=(total, height, width, 3))
        elif frames_out:
            self.png_dir = Path(frames_out)
            self.png_dir.mkdir(parents=True, exist_ok=True)

    def write(self, frames: np.ndarray) -> None:
        from PIL import Image

        pixels = to_uint8(frames)
        for frame in pixels:
            self.writer.write(frame)
        if self.npy is not None:
            self.npy[self.count:self.count + len(frames)] = frames
        if self.png_dir is not None:
            for i, frame in enumerate(pixels):
                Image.fromarray(frame).save(self.png_dir / f"{self.count + i:06d}.png")
        self.count += len(frames)

    def close(self, ok: bool) -> None:
        if self.npy is not None:
            self.npy.flush()
            del self.npy
        if ok:
            self.writer.close()
        else:
            self.writer.abort()


def preflight(checkpoint: str, cfg: GenerateConfig, image: str | None = None, end_image: str | None = None,
              video: str | None = None) -> str:
    """Refuse, before any weights load, settings the checkpoint cannot serve; returns its pipeline name."""
    from models.checkpoint import is_diffusion_forcing, pipeline_class_name
    from tasks.generate.lib import dmd_video

    name = pipeline_class_name(checkpoint)
    if dmd_video.is_dmd_generator(checkpoint):
        dmd_video.check(cfg, image, end_image, video)
    elif not is_diffusion_forcing(checkpoint):
        from models.full_sequence import check_full_sequence

        check_full_sequence(cfg, name, image, end_image, video, checkpoint)
    return name


def frame_stream(checkpoint: str, cfg: GenerateConfig, image=None, end_image=None, video=None,
                 progress: bool = False) -> tuple[Iterable[np.ndarray], dict]:
    """Chunks of output frames from the sampler the checkpoint calls for, and facts about the run."""
    from models.checkpoint import is_diffusion_forcing, load_pipeline_components, pipeline_class_name
    from tasks.generate.lib import dmd_video

    if dmd_video.is_dmd_generator(checkpoint):  # a distill-dmd generator: its own few-step sampler
        dmd_video.check(cfg, image, end_image, video)
        return iter([dmd_video.generate(checkpoint, cfg)]), {"sampler": "dmd"}
    if not is_diffusion_forcing(checkpoint):
        from models.full_sequence import check_full_sequence, generate_full_sequence

        name = pipeline_class_name(checkpoint)
        check_full_sequence(cfg, name, image, end_image, video, checkpoint)  # fail before loading weights
        return iter([generate_full_sequence(checkpoint, name, cfg, image)]), {"sampler": "full-sequence"}
    from models.df_sampler import DFSampler

    sampler = DFSampler(load_pipeline_components(checkpoint))
    facts: dict = {"sampler": "diffusion-forcing"}

    def chunks():
        for _, pixels in sampler.stream(cfg, image, end_image, video, progress):
            yield pixels
        facts.update(sampler.stats)  # TeaCache's computed / skipped passes, once the stream is spent

    return chunks(), facts


def generate_video(checkpoint: str, cfg: GenerateConfig, out: str, image: str | None = None,
                   end_image: str | None = None, video: str | None = None, frames_out: str | None = None,
                   progress: bool = False) -> dict:
    """Generate `cfg` from the checkpoint folder into the mp4 `out` (and `frames_out`); returns run stats."""
    image_px = load_image(image, cfg.height, cfg.width) if image else None
    end_px = load_image(end_image, cfg.height, cfg.width) if end_image else None
    video_px = load_video(video, cfg.height, cfg.width) if video else None
    start, cpu_start = time.perf_counter(), time.process_time()
    chunks, facts = frame_stream(checkpoint, cfg, image_px, end_px, video_px, progress)
    total = cfg.output_frames(0 if video_px is None else len(video_px))
    sink = FrameSink(out, cfg.fps, cfg.height, cfg.width, total, frames_out)
    ok = False
    try:
        for chunk in chunks:
            sink.write(chunk)
        ok = sink.count == total
        if not ok:
            raise RuntimeError(f"generated {sink.count} frames, expected {total}")
    finally:
        sink.close(ok)
    seconds = time.perf_counter() - start
    new_frames = total - (0 if video_px is None else len(video_px))
    return {**facts, "frames": total, "generated_frames": new_frames, "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu_start,
            "seconds_per_video_second": seconds / (new_frames / cfg.fps), "out": os.path.abspath(out)}
