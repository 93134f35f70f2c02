"""Latents: VAE latents + umT5 embeddings of a dataset, cached once per encoder and resolution.

Training reads only this cache (no decode or encode on the training hot path). Per clip of the dataset view (``in_<dataset>``):
the clip (border-cropped when the view says so) goes to its bucket (``models.latent_encode.bucket_for``:
nearest aspect ratio, longest duration bin it fills after FPS normalisation, report section 3.3),
one video sample is drawn from its middle, and for image+video stages ``images_per_video`` still
frames too; its ``caption_t2v`` is encoded once. The driver computes every sample's key first and
looks it up in the cache folder, so only missing samples reach the encoder actors: a rerun, or
another stage at the same resolution (pretrain-540p and sft-540p), encodes nothing it already has.

Output: one row per training sample (clip_id, kind, bucket, latent_frames, pixel height/width, fps,
caption, shard_uri, key, error); a clip that fills no bucket or fails to decode is one error row.
"""

from __future__ import annotations

import logging
import os
import time

import pyarrow as pa
import torch

from infra import storage
from infra.config import ConfigError, value_hash
from infra.config_train import FPS_RATES, LatentsConfig, ResolutionConfig
from infra.manifest import Manifest, read_rows
from infra.raydata import flat_map_rows
from infra.stage import StageContext, StageWork, run_stage
from infra.tables import flag
from infra.video import iter_frames
from models.latent_encode import (
    bucket_for,
    bucket_name,
    encode_text,
    encode_videos,
    encoder_fingerprint,
    fps_normalise,
    latent_frames,
    nearest_aspect_ratio,
    resample_indices,
    resampled_count,
    resize_center_crop,
)
from tasks.train.lib.latent_cache import (
    LatentCache,
    Sample,
    cache_folder,
    cache_root,
    load_index,
    open_cache,
    sample_key,
    write_shard,
)

__all__ = ["LATENTS_SCHEMA", "LatentCache", "LatentWorker", "Sample", "open_cache", "plan_clip", "run"]
log = logging.getLogger("reelflow.latents")
MEDIA = ("images+videos", "videos")

LATENTS_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("kind", pa.string()), ("bucket", pa.string()), ("latent_frames", pa.int32()),
    ("height", pa.int32()), ("width", pa.int32()),  # the bucket's pixel size
    ("fps", pa.int32()), ("caption", pa.string()), ("shard_uri", pa.string()), ("key", pa.string()),
    ("error", pa.string()),
])


def _visible_size(row: dict) -> tuple[int, int, list[int] | None]:
    """(width, height, crop box) of the picture the model sees: the crop box when the view has one."""
    box = row.get("crop_box")
    if box is not None and len(box) == 4 and box[2] > 0 and box[3] > 0:
        return int(box[2]), int(box[3]), [int(v) for v in box]
    return int(row["width"]), int(row["height"]), None


def plan_clip(row: dict, res: ResolutionConfig, media: str, images_per_video: int, key_parts: dict) -> tuple[list[dict], str | None]:
    """The samples of one clip (frames to decode, bucket, key), or ``([], why)`` when it yields none."""
    width, height, box = _visible_size(row)
    fps, n = float(row["fps"] or 0), int(row["num_frames"] or 0)
    if fps <= 0 or n <= 0 or width <= 0 or height <= 0:
        return [], f"unusable clip: {n} frames at {fps} fps, {width}x{height}"
    rate, caption = fps_normalise(fps), row.get("caption_t2v") or ""
    picks = []  # (kind, source frame indices, aspect ratio, height, width)
    bucket = bucket_for(width, height, n, fps, res)
    if bucket is not None:
        ar, bucket_h, bucket_w, frames = bucket
        offset = (resampled_count(n, fps, rate) - frames) // 2  # the middle of the clip
        picks.append(("video", resample_indices(n, fps, frames, offset), ar, bucket_h, bucket_w))
    if media == "images+videos":
        ar = nearest_aspect_ratio(width, height, res.aspect_ratios)
        stills = 1 if row.get("media") == "image" else images_per_video  # an image source is one still
        picks += [("image", [int((i + 0.5) * n / stills)], ar, *res.size(ar)) for i in range(stills)]
    if not picks:
        return [], (f"too short: {n} frames at {fps:g} fps are {resampled_count(n, fps, rate)} at {rate} fps, "
                    f"fewer than the shortest duration bin ({min(res.video_frames)} frames)")
    samples = []
    for kind, frames, ar, bucket_h, bucket_w in picks:
        name = bucket_name(latent_frames(len(frames)), ar, bucket_h, bucket_w)
        key = sample_key(clip=row["clip_id"], crop=box, kind=kind, frames=frames, bucket=name, caption=caption, **key_parts)
        samples.append({"clip_id": row["clip_id"], "kind": kind, "bucket": name, "latent_frames": latent_frames(len(frames)),
                        "height": bucket_h, "width": bucket_w, "fps": rate, "caption": caption, "key": key,
                        "frames": frames, "crop": box, "clip_uri": row["clip_uri"]})
    return samples, None


def decode_samples(clip_uri: str, samples: list[dict]) -> dict[str, torch.Tensor]:
    """key -> float [T, 3, H, W] pixels of each sample of one clip, from ONE decode; each wanted
    frame is cropped and resized as it arrives, so a long clip never sits in memory at full size."""
    wanted: dict[int, set[tuple[int, int]]] = {}
    for s in samples:
        for i in s["frames"]:
            wanted.setdefault(i, set()).add((s["height"], s["width"]))
    crop = samples[0]["crop"]
    frames: dict[tuple[int, int, int], torch.Tensor] = {}
    with storage.local_copy(clip_uri) as path:
        for index, frame in iter_frames(path, 0, max(wanted) + 1):
            if crop is not None:
                x, y, w, h = crop
                frame = frame[y:y + h, x:x + w]
            for size in wanted.get(index, ()):
                frames[(index, *size)] = resize_center_crop(frame[None], *size)[0]
    missing = sorted(i for i in wanted if any((i, *size) not in frames for size in wanted[i]))
    if missing:
        raise ValueError(f"the clip decodes to fewer frames than its row says (frame {missing[0]} is missing)")
    return {s["key"]: torch.stack([frames[(i, s["height"], s["width"])] for i in s["frames"]]) for s in samples}


class LatentWorker:
    """Ray actor body: VAE and umT5 loaded once; one item = the clips of one new shard."""

    def __init__(self, checkpoint_dir: str, cfg: dict, folder: str):
        from diffusers import AutoencoderKLWan
        from transformers import AutoTokenizer, UMT5EncoderModel

        self.cfg = cfg = LatentsConfig.model_validate(cfg)
        torch.set_num_threads(cfg.torch_threads)
        checkpoint_dir = storage.fetch_folder(checkpoint_dir)  # this actor's node may not see the driver's disk
        device = "cuda" if cfg.resources.wants_gpu() and torch.cuda.is_available() else "cpu"
        self.folder = folder
        self.tokenizer = AutoTokenizer.from_pretrained(os.path.join(checkpoint_dir, "tokenizer"))
        self.text_encoder = UMT5EncoderModel.from_pretrained(
            os.path.join(checkpoint_dir, "text_encoder"), torch_dtype=getattr(torch, cfg.text_dtype)).eval().to(device)
        # fp32 VAE, as diffusers' pipelines load it (load_pipeline_components does the same).
        self.vae = AutoencoderKLWan.from_pretrained(os.path.join(checkpoint_dir, "vae"), torch_dtype=torch.float32).eval().to(device)

    def __call__(self, item: list[list[dict]]) -> list[dict]:
        started = time.perf_counter()
        errors: dict[str, str] = {}
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, dict] = {}
        for start in range(0, len(item), self.cfg.batch_size):
            self._encode_batch(item[start:start + self.cfg.batch_size], tensors, meta, errors)
        shard_uri = write_shard(self.folder, tensors, meta) if meta else None
        keys = [s["key"] for clip in item for s in clip]
        seconds = (time.perf_counter() - started) / len(keys)  # this actor's busy time, shared by its samples
        return [{"key": k, "shard_uri": None if k in errors else shard_uri, "error": errors.get(k), "seconds": seconds}
                for k in keys]

    def _encode_batch(self, clips: list[list[dict]], tensors: dict, meta: dict, errors: dict) -> None:
        pixels: dict[str, torch.Tensor] = {}
        for samples in clips:
            try:
                pixels.update(decode_samples(samples[0]["clip_uri"], samples))
            except Exception as exc:  # unreadable / truncated clip: its rows get the error, the stage goes on
                for s in samples:
                    errors[s["key"]] = f"{s['clip_uri']}: decode failed ({type(exc).__name__}: {exc})"
        todo = [s for samples in clips for s in samples if s["key"] in pixels]
        shapes: dict[tuple, list[dict]] = {}
        for s in todo:  # same bucket -> same shape -> one VAE call
            shapes.setdefault(tuple(pixels[s["key"]].shape), []).append(s)
        for group in shapes.values():
            try:
                latents = encode_videos(self.vae, torch.stack([pixels.pop(s["key"]) for s in group]))
            except Exception as exc:
                errors.update({s["key"]: f"VAE encode failed ({type(exc).__name__}: {exc})" for s in group})
                continue
            for s, latent in zip(group, latents, strict=True):
                tensors[f"{s['key']}.latent"] = latent.clone()
        done = [s for s in todo if f"{s['key']}.latent" in tensors]
        captions = sorted({s["caption"] for s in done})
        embeddings = dict(zip(captions, encode_text(self.tokenizer, self.text_encoder, captions, self.cfg.text_len), strict=True))
        for s in done:
            tensors[f"{s['key']}.text"] = embeddings[s["caption"]].clone()  # safetensors refuses shared storage
            meta[s["key"]] = {k: s[k] for k in ("clip_id", "kind", "bucket", "fps", "frames")}


def _check_args(cfg: LatentsConfig, checkpoint_dir: str, media: str, fps_only: int | None) -> None:
    if media not in MEDIA:
        raise ConfigError(f"media must be one of {list(MEDIA)}, got {media!r}")
    if fps_only is not None and fps_only not in FPS_RATES:
        raise ConfigError(f"fps_only must be one of {list(FPS_RATES)} or null, got {fps_only!r}")
    if media == "images+videos" and cfg.images_per_video == 0:
        log.warning("latents: media images+videos with images_per_video=0 encodes videos only")


def run(ctx: StageContext, cfg: LatentsConfig, dataset: Manifest, checkpoint_dir: str, resolution_name: str,
        res: ResolutionConfig, media: str = "videos", fps_only: int | None = None) -> Manifest:
    """Stage ``latents-<dataset>-<resolution>``: the dataset's training samples, encoded or reused."""
    _check_args(cfg, checkpoint_dir, media, fps_only)
    fingerprint = encoder_fingerprint(storage.fetch_folder(checkpoint_dir))  # S3: a node-local copy
    folder = cache_folder(cache_root(cfg, ctx.cfg.storage.run_root), fingerprint, res)
    key_parts = {"encoder": fingerprint, "text_len": cfg.text_len, "text_dtype": cfg.text_dtype}
    extra = value_hash({"res": res.model_dump(), "media": media, "fps_only": fps_only, "folder": folder, **key_parts})

    def body(work: StageWork) -> pa.Table:
        rows = read_rows(dataset)
        if rows and flag(dataset.stage) not in rows[0]:
            raise ConfigError(f"latents needs a dataset view with column {flag(dataset.stage)!r}; "
                              f"{dataset.stage!r} has none (pass a D_* dataset manifest)")
        members = [r for r in rows if r.get(flag(dataset.stage)) and r.get("error") is None]
        if fps_only is not None:
            members = [r for r in members if r["fps"] and fps_normalise(float(r["fps"])) == fps_only]
        planned = [(row, *plan_clip(row, res, media, cfg.images_per_video, key_parts)) for row in members]
        cached = load_index(folder)
        todo, seen = [], set(cached)
        for _, samples, _ in planned:
            new = [s for s in samples if s["key"] not in seen]
            seen.update(s["key"] for s in new)
            if new:
                todo.append(new)
        started = time.time()
        encoded = _encode(todo, cfg, checkpoint_dir, folder)
        wall = max(time.time() - started, 1e-9)
        results = {**{k: {"shard_uri": u, "error": None} for k, u in cached.items()}, **encoded}
        out = []  # one row per sample, in dataset order; one error row for a clip that gave none
        for row, samples, why in planned:
            for s in samples:
                s.update(results[s["key"]])
            errors = [s["error"] for s in samples if s["error"]]
            if why or (errors and len(errors) == len(samples)):
                out.append({"clip_id": row["clip_id"], "kind": "video", "error": why or errors[0]})
            else:
                out += samples
        _measure(work, out, encoded, cached, wall, folder, fingerprint)
        log.warning("latents %s: %s", dataset.stage, work.stats)
        return pa.Table.from_pylist([{f: s.get(f) for f in LATENTS_SCHEMA.names} for s in out], schema=LATENTS_SCHEMA)

    return run_stage(ctx, f"latents-{dataset.stage}-{resolution_name}", cfg, [dataset], body, key_extra=extra)


def _encode(todo: list[list[dict]], cfg: LatentsConfig, checkpoint_dir: str, folder: str) -> dict[str, dict]:
    """Encode the clips in ``todo`` on an actor pool; key -> {shard_uri, error}."""
    total = sum(len(c) for c in todo)
    if not total:
        return {}
    resources = cfg.resources.model_copy(update={"actors": cfg.resources.actors or 1})  # one encoder unless declared
    per_shard = min(cfg.shard_samples, -(-total // resources.actors))  # every actor gets work
    items, current = [], []
    for samples in todo:
        if current and sum(len(c) for c in current) + len(samples) > per_shard:
            items.append(current)
            current = []
        current.append(samples)
    items.append(current)
    rows = flat_map_rows(items, LatentWorker, {"checkpoint_dir": checkpoint_dir, "cfg": cfg.model_dump(), "folder": folder},
                         resources, stage="latents")
    return {r["key"]: r for r in rows}


def _measure(work: StageWork, out: list[dict], encoded: dict, cached: dict, wall: float, folder: str,
             fingerprint: str) -> None:
    """Samples encoded / reused, and throughput: wall (with actor start-up) and per busy actor."""
    ok = [r for r in encoded.values() if r["error"] is None]
    busy = sum(r["seconds"] for r in encoded.values())
    counts = {"samples": sum("key" in s for s in out), "encoded": len(ok),
              "reused": sum("key" in s and s["key"] in cached for s in out),
              "error_rows": sum(s["error"] is not None for s in out)}
    rates = {"samples_per_s": len(ok) / wall if ok else 0.0,
             "samples_per_s_per_actor": len(ok) / busy if ok and busy else 0.0}
    work.metrics.update(samples=counts["samples"], samples_encoded=len(ok), samples_reused=counts["reused"], **rates)
    work.stats.update(cache_folder=folder, encoder_fingerprint=fingerprint, **counts,
                      **{k: round(v, 3) for k, v in rates.items()})
