"""Stage ``pairs``: motion preference pairs for the reward model (report section 3.4.1).

Automatic pairs: each real clip of the dataset view is the chosen sample for its own prompt
(``caption_t2v``; the clip-prompt CLIP similarity is recorded, and clips below ``clip_match_min`` are
dropped), against progressively distorted versions of it: V2V, I2V and T2V regenerations through the
checkpoint's DiT (``models.regenerate``) and frame-rate, noise and time-reversal defects
(``models.distortions``). Human pairs: ``human_samples_per_prompt`` T2V samples per prompt from the
checkpoint, every two of them a pair, labelled per ``post.human_pairs_mode``: by the pairwise audit page
(``pending`` until then), by a motion-statistics oracle (``simulated``), or not made (``off``).

Every pair video is an mp4 in the stage folder; the chosen sample's side is drawn at random (seeded),
so a reward model cannot learn the side. Pairs whose videos differ less than ``min_difference`` are
kept with ``discarded`` set. Clips and prompts are processed in a Ray Data actor pool
(``infra.raydata.flat_map_rows``): each actor loads the checkpoint and the CLIP model once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from itertools import combinations

import numpy as np
import pyarrow as pa

from infra import manifest as mf
from infra import storage
from infra.checkpoints import checkpoint_dir
from infra.config import ConfigError, value_hash
from infra.config_datasets import AuditConfig
from infra.config_post import PairsConfig
from infra.manifest import Manifest
from infra.raydata import flat_map_rows
from infra.stage import StageContext, StageWork, run_stage
from infra.tables import flag
from infra.video import VideoError, iter_frames, write_video
from models.distortions import auto_pairs, distort, level, mean_abs_difference, motion_stats
from models.latent_encode import fps_normalise, resample_indices, resampled_count, resize_center_crop
from models.regenerate import REGENERATIONS, Conditioning, regenerate
from tasks.post.lib.pairs_summary import label_human_pairs, summarise

SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("kind", pa.string()), ("prompt", pa.string()), ("source_clip_id", pa.string()),
    ("a_uri", pa.string()), ("b_uri", pa.string()), ("a_desc", pa.string()), ("b_desc", pa.string()),
    ("a_level", pa.int64()), ("b_level", pa.int64()), ("label", pa.string()), ("label_source", pa.string()),
    ("failure", pa.string()), ("clip_similarity", pa.float64()), ("generator", pa.string()), ("seed", pa.int64()),
    ("discarded", pa.bool_()), ("discard_reason", pa.string()), ("error", pa.string()),
])
GENERATED_FPS = 24  # human samples; a clip's distortions keep the clip's normalised rate
CLIP_FRAMES = 3  # frames whose CLIP embeddings are averaged for the clip-prompt similarity


def derived_seed(*parts) -> int:
    """A stable 31-bit seed from any JSON-able parts (clip id, config seed, ...)."""
    return int(hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def pair_id(*parts) -> str:
    return value_hash(parts)


def real_frames(row: dict, count: int, height: int, width: int) -> np.ndarray:
    """``count`` frames from the middle of a clip, resampled to its normalised fps, inside its crop box,
    resized and centre-cropped to (height, width): float (T, H, W, 3) in [0, 1]."""
    fps, n = float(row.get("fps") or 0), int(row.get("num_frames") or 0)
    available = resampled_count(n, fps, fps_normalise(fps))
    if available < count:
        raise ValueError(f"too short: {n} frames at {fps:g} fps give {available} at {fps_normalise(fps)} fps, "
                         f"pairs need {count}")
    indices = resample_indices(n, fps, count, (available - count) // 2)
    box = row.get("crop_box")
    wanted, found = set(indices), {}
    with storage.local_copy(row["clip_uri"]) as path:
        for index, frame in iter_frames(path, min(wanted), max(wanted) + 1):
            if index in wanted:
                if box is not None and len(box) == 4 and box[2] > 0 and box[3] > 0:
                    x, y, w, h = (int(v) for v in box)
                    frame = frame[y:y + h, x:x + w]
                found[index] = resize_center_crop(frame[None], height, width)[0]
    if len(found) < len(wanted):
        raise ValueError(f"the clip decodes to fewer frames than its row says (wanted up to {max(wanted)})")
    video = np.stack([found[i].permute(1, 2, 0).numpy() for i in indices]) / 255.0
    return video.astype(np.float32)


def pair_row(**values) -> dict:
    row = dict.fromkeys(SCHEMA.names)
    row.update({"discarded": False, **values})
    return row


def orient(chosen: str, rejected: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """(a, b, label): the chosen sample lands on a random side."""
    return (chosen, rejected, "a") if rng.random() < 0.5 else (rejected, chosen, "b")


def difference_check(a: np.ndarray, b: np.ndarray, min_difference: float) -> dict:
    diff = mean_abs_difference(a, b)
    if diff < min_difference:
        return {"discarded": True, "discard_reason": f"videos differ by {diff:.4f} < min_difference {min_difference}"}
    return {}


class PairsWorker:
    """Ray actor body: checkpoint components and CLIP load once; one item = one clip or one human prompt."""

    def __init__(self, checkpoint: str, cfg: dict, size: tuple[int, int], text_len: int, clip_model: str,
                 tmp_uri: str, final_uri: str):
        import torch

        from models.checkpoint import load_pipeline_components
        from models.zero_shot import ZeroShotClassifier

        torch.set_num_threads(1)  # parallelism comes from the actor pool; the machine is shared
        self.cfg, self.checkpoint = PairsConfig.model_validate(cfg), checkpoint
        self.height, self.width = size
        self.text_len, self.tmp_uri, self.final_uri = text_len, tmp_uri, final_uri
        parts = load_pipeline_components(storage.fetch_folder(checkpoint))  # any node: a node-local copy
        self.vae, self.transformer = parts["vae"], parts["transformer"]
        self.tokenizer, self.text_encoder = parts["tokenizer"], parts["text_encoder"]
        self.clip = ZeroShotClassifier(storage.fetch_folder(clip_model))
        self.negative = self._embed("")  # the empty negative prompt

    def _embed(self, text: str):
        from models.df_sampler import encode_prompts

        return encode_prompts(self.tokenizer, self.text_encoder, [text], self.text_len).float()

    def _write(self, frames: np.ndarray, rel: str, fps: float) -> str:
        with tempfile.TemporaryDirectory() as scratch:
            local = os.path.join(scratch, "video.mp4")
            write_video((np.clip(frames, 0, 1) * 255).round().astype(np.uint8), local, fps)
            storage.upload(local, storage.join(self.tmp_uri, rel))
        return storage.join(self.final_uri, rel)

    def _latent_shape(self) -> tuple[int, ...]:
        from models.latent_encode import latent_frames

        stride = 2 ** len(self.vae.config.temperal_downsample)
        return (1, self.transformer.config.in_channels, latent_frames(self.cfg.frames),
                self.height // stride, self.width // stride)

    def __call__(self, item: dict) -> list[dict]:
        started = time.perf_counter()
        try:
            out = self._clip(item) if item["kind"] == "clip" else self._prompt(item)
        except (VideoError, ValueError, OSError) as exc:
            kind = "auto" if item["kind"] == "clip" else "human"
            out = {"rows": [pair_row(pair_id=pair_id(item["key"], "error", item["seed"]), kind=kind,
                                     prompt=item["prompt"], source_clip_id=item.get("clip_id"), seed=item["seed"],
                                     generator=self.checkpoint, error=f"{type(exc).__name__}: {exc}")]}
        out.update(kind=item["kind"], seconds=time.perf_counter() - started)
        return [out]

    def _clip(self, item: dict) -> dict:
        import torch

        from models.df_vae import decode, encode_frames

        cfg, clip_id = self.cfg, item["clip_id"]
        frames = real_frames(item["row"], cfg.frames, self.height, self.width)
        picks = np.linspace(0, len(frames) - 1, CLIP_FRAMES).round().astype(int)
        similarity = self.clip.similarity(list((frames[picks] * 255).round().astype(np.uint8)), item["prompt"])
        if cfg.clip_match_min is not None and similarity < cfg.clip_match_min:
            return {"rows": [], "dropped_pairs": len(auto_pairs(cfg.distortions)), "similarity": similarity}
        rng = np.random.default_rng(item["seed"])
        generator = torch.Generator().manual_seed(item["seed"])
        cond = Conditioning(self._embed(item["prompt"]), self.negative, cfg.guidance_scale)
        clean = encode_frames(self.vae, frames)
        videos = {"real": frames}
        for kind in cfg.distortions:
            if kind in REGENERATIONS:
                latent = regenerate(kind, self.transformer, clean, cond, cfg.sample_steps, generator, cfg.v2v_strength)
                videos[kind] = decode(self.vae, latent)
            else:
                videos[kind] = distort(kind, frames, cfg.noise_std, rng)
        fps = fps_normalise(float(item["row"]["fps"]))
        uris = {desc: self._write(v, f"videos/{clip_id}/{desc}.mp4", fps) for desc, v in videos.items()}
        rows = []
        for chosen, rejected in auto_pairs(cfg.distortions):
            a, b, label = orient(chosen, rejected, rng)
            rows.append(pair_row(
                pair_id=pair_id(clip_id, chosen, rejected, item["seed"]), kind="auto",
                prompt=item["prompt"], source_clip_id=clip_id, a_uri=uris[a], b_uri=uris[b], a_desc=a, b_desc=b,
                a_level=level(a), b_level=level(b), label=label, label_source="auto", clip_similarity=similarity,
                generator=self.checkpoint, seed=item["seed"],
                **difference_check(videos[a], videos[b], cfg.min_difference)))
        return {"rows": rows, "similarity": similarity, "real_stats": motion_stats(frames),
                "videos": [(desc, uris[desc]) for desc in videos]}

    def _prompt(self, item: dict) -> dict:
        import torch

        from models.df_vae import decode

        cfg, key = self.cfg, item["key"]
        cond = Conditioning(self._embed(item["prompt"]), self.negative, cfg.guidance_scale)
        blank = torch.zeros(self._latent_shape())
        videos, uris = {}, {}
        for k in range(cfg.human_samples_per_prompt):
            desc = f"sample-{k}"
            latent = regenerate("t2v", self.transformer, blank, cond, cfg.sample_steps,
                                torch.Generator().manual_seed(item["seed"] + k))
            videos[desc] = decode(self.vae, latent)
            uris[desc] = self._write(videos[desc], f"human/{key}/{desc}.mp4", GENERATED_FPS)
        rows = [pair_row(pair_id=pair_id(key, a, b, item["seed"]), kind="human",
                         prompt=item["prompt"], a_uri=uris[a], b_uri=uris[b], a_desc=a, b_desc=b,
                         a_level=level("t2v"), b_level=level("t2v"),  # samples are T2V generations
                         label_source="pending",
                         generator=self.checkpoint, seed=item["seed"],
                         **difference_check(videos[a], videos[b], cfg.min_difference))
                for a, b in combinations(videos, 2)]
        return {"rows": rows, "sample_stats": {uris[d]: motion_stats(v) for d, v in videos.items()},
                "videos": [(d, uris[d]) for d in videos]}


def plan_items(df, cfg: PairsConfig, dataset_stage: str, human_mode: str) -> list[dict]:
    """The clips (a seeded draw of the view's members) and, unless human pairs are off, the human
    prompts (the captions of the first drawn clips)."""
    if flag(dataset_stage) not in df.columns:
        raise ConfigError(f"pairs needs a dataset view with column {flag(dataset_stage)!r}; "
                          f"{dataset_stage!r} has none (post.pairs.dataset must name a dataset stage)")
    members = df[df[flag(dataset_stage)].fillna(False).astype(bool) & df["error"].isna()]
    members = members[members["caption_t2v"].fillna("").str.strip() != ""]
    order = np.random.default_rng(cfg.seed).permutation(len(members))[:cfg.max_clips]
    rows = members.iloc[order].to_dict("records")
    items = [{"kind": "clip", "key": r["clip_id"], "clip_id": r["clip_id"], "prompt": r["caption_t2v"], "row": r,
              "seed": derived_seed(cfg.seed, r["clip_id"])} for r in rows]
    if human_mode != "off":
        for i, r in enumerate(rows[:cfg.human_prompts]):
            key = hashlib.sha256(r["caption_t2v"].encode()).hexdigest()[:12]
            items.append({"kind": "prompt", "key": key, "prompt": r["caption_t2v"],
                          "seed": derived_seed(cfg.seed, "human", i, key)})
    return items


def _clip_model(ctx: StageContext, cfg: PairsConfig) -> str:
    from models.zero_shot import build_tiny_clip

    classifier = ctx.cfg.stages.balance.classifier
    path = cfg.clip_model or classifier.model_path
    if path:
        return path
    # Built here, once, so the actors only read it (the same folder the balance stage builds); under a remote
    # run root from there, since an actor on another node cannot read this process's disk.
    built = build_tiny_clip(os.path.join(os.path.abspath(classifier.cache_dir), "tiny-clip"))
    return storage.share_folder(built, ctx.cfg.storage.run_root, "tiny-clip")


def run(ctx: StageContext, cfg: PairsConfig, audit_cfg: AuditConfig, dataset: Manifest,
        checkpoint: Manifest) -> Manifest:
    """Pairs from ``dataset``'s view (real clips) and ``checkpoint`` (a training stage's manifest).
    ``audit_cfg`` belongs to the pairwise audit page that labels ``pending`` human pairs (interactive mode);
    this stage only records the mode it ran under."""
    resolutions = ctx.cfg.train.resolutions
    if cfg.resolution not in resolutions:
        raise ConfigError(f"post.pairs.resolution {cfg.resolution!r} is not one of {sorted(resolutions)}")
    if (cfg.frames - 1) % 4:
        raise ConfigError(f"post.pairs.frames must be 4k+1 (the Wan VAE's temporal stride), got {cfg.frames}")
    size = resolutions[cfg.resolution].size(16 / 9)
    folder, mode = checkpoint_dir(checkpoint), ctx.cfg.post.human_pairs_mode
    clip_model, text_len = _clip_model(ctx, cfg), ctx.cfg.train.latents.text_len
    key_extra = value_hash([mode, size, text_len, clip_model])

    def body(work: StageWork) -> pa.Table:
        items = plan_items(mf.read_table(dataset), cfg, dataset.stage, mode)
        kwargs = {"checkpoint": folder, "cfg": cfg.model_dump(mode="json"), "size": size, "text_len": text_len,
                  "clip_model": clip_model, "tmp_uri": work.tmp_uri, "final_uri": work.final_uri}
        results = flat_map_rows(items, PairsWorker, kwargs, cfg.resources, stage="pairs")
        rows = [row for result in results for row in result["rows"]]
        if mode == "simulated":
            label_human_pairs(rows, results, cfg.human_tie_margin)
        summarise(work, rows, results, cfg, folder, mode, audit_cfg.mode)
        return pa.Table.from_pylist(rows, schema=SCHEMA)

    return run_stage(ctx, "pairs", cfg, [dataset, checkpoint], body, key_extra)
