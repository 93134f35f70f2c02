"""What the latent cache stores: bucket choice, FPS normalisation, VAE latents, umT5 embeddings.

Pure functions over torch; ``tasks/train/latents.py`` does the I/O. Conventions follow diffusers' Wan /
SkyReels-V2 pipelines so a cached sample is exactly what those pipelines produce or consume:

- latents are the VAE posterior's mode, normalised ``(mu - latents_mean) / latents_std`` per channel;
  the pipelines de-normalise with ``latents / (1 / latents_std) + latents_mean`` before decoding
  (``SkyReelsV2Pipeline.__call__``), and normalise prefix videos the same way (the v2v pipeline).
- text embeddings are ``_get_t5_prompt_embeds`` before its zero padding: the prompt cleaned, padded
  to ``text_len``, encoded with the attention mask, cut to the prompt's true token count.
- FPS normalisation (report section 3.3): every clip is resampled to a rate of ``FPS_RATES``.
"""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from infra.config_train import FPS_RATES, ResolutionConfig

VAE_TEMPORAL_STRIDE = 4  # Wan VAE: 4k+1 pixel frames -> k+1 latent frames
_EPS = 1e-9  # float fps ratios may land a hair off an exact frame position


def fps_normalise(fps: float) -> int:
    """The rate a clip is resampled to: the largest of FPS_RATES <= its fps, else the smallest."""
    below = [r for r in FPS_RATES if r <= fps + _EPS]
    return max(below) if below else min(FPS_RATES)


def resampled_count(num_frames: int, fps: float, target: int) -> int:
    """Frames a clip of ``num_frames`` at ``fps`` has after resampling to ``target`` fps."""
    if num_frames <= 0 or fps <= 0:
        return 0
    return max(0, math.ceil(num_frames * target / fps - _EPS))


def resample_indices(num_frames: int, fps: float, count: int, offset: int = 0) -> list[int]:
    """Source frame of each of ``count`` resampled frames starting at resampled frame ``offset``:
    frame k shows the source frame on screen at time k / target (a stride; repeats below 16 fps)."""
    target = fps_normalise(fps)
    return [min(num_frames - 1, int(math.floor((offset + k) * fps / target + _EPS))) for k in range(count)]


def latent_frames(pixel_frames: int) -> int:
    return (pixel_frames - 1) // VAE_TEMPORAL_STRIDE + 1


def nearest_aspect_ratio(width: int, height: int, ratios: list[float]) -> float:
    """The aspect-ratio bin nearest in log distance (so 2:1 and 1:2 are equally far from 1:1)."""
    ar = math.log(width / height)
    return min(ratios, key=lambda r: abs(math.log(r) - ar))


def bucket_for(width: int, height: int, num_frames_available: int, fps: float,
               res: ResolutionConfig) -> tuple[float, int, int, int] | None:
    """(aspect_ratio, height, width, pixel_frames) of a clip's video bucket, or None when its
    resampled length fills no duration bin. The longest bin that fits wins (the most motion)."""
    if width <= 0 or height <= 0:
        return None
    ar = nearest_aspect_ratio(width, height, res.aspect_ratios)
    available = resampled_count(num_frames_available, fps, fps_normalise(fps))
    fitting = [f for f in res.video_frames if f <= available]
    if not fitting:
        return None
    bucket_h, bucket_w = res.size(ar)
    return ar, bucket_h, bucket_w, max(fitting)


def bucket_name(frames_latent: int, aspect_ratio: float, height: int, width: int) -> str:
    return f"f{frames_latent}-ar{aspect_ratio:.2f}-{height}x{width}"


def encoder_fingerprint(checkpoint_dir: str) -> str:
    """Hash of every file under vae/, text_encoder/ and tokenizer/ (weights, configs, vocab).

    The transformer and scheduler are left out on purpose: training changes only the DiT, so
    every stage's checkpoint shares the cache of the base checkpoint's encoders."""
    digest = hashlib.sha256()
    for part in ("vae", "text_encoder", "tokenizer"):
        folder = os.path.join(checkpoint_dir, part)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{checkpoint_dir} has no {part}/ folder; is it a diffusers checkpoint?")
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, checkpoint_dir).encode() + b"\0")
                with open(path, "rb") as fh:
                    digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()[:16]


def resize_center_crop(frames: np.ndarray | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, height, width] in [0, 255]: scaled to cover the bucket
    (aspect kept, antialiased), then the centre cut out."""
    x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        x = x[:, :, top:top + height, left:left + width]
    return x.clamp(0, 255)


def _stats(vae) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(shape)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(shape)
    return mean, std


def normalise_latents(vae, raw: torch.Tensor) -> torch.Tensor:
    """[B, C, F, h, w] posterior mode -> what the DiT sees (inverse of the pipelines' decode step)."""
    mean, std = _stats(vae)
    return (raw.float() - mean.to(raw.device)) / std.to(raw.device)


def denormalise_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Exactly the pipelines' step before ``vae.decode``: ``latents / (1 / std) + mean``."""
    mean, std = _stats(vae)
    return latents / (1.0 / std.to(latents.device)) + mean.to(latents.device)


@torch.no_grad()
def encode_videos(vae, videos: torch.Tensor) -> torch.Tensor:
    """Float [B, T, 3, H, W] in [0, 255] (same shape) -> normalised latents [B, C, F, h, w] float32."""
    param = next(vae.parameters())
    x = (videos.to(param.device, torch.float32) / 127.5 - 1.0).permute(0, 2, 1, 3, 4)  # [B, 3, T, H, W]
    raw = vae.encode(x.to(param.dtype)).latent_dist.mode()  # the pipelines' sample_mode="argmax"
    return normalise_latents(vae, raw).float().cpu()


def encode_video(vae, frames: np.ndarray | torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> normalised latent [C, F, h, w] float32; ``size`` = bucket (height, width)
    to resize + centre-crop to (None: the frames' own size, which must be a multiple of 8)."""
    frames = np.asarray(frames)
    height, width = size or frames.shape[1:3]
    return encode_videos(vae, resize_center_crop(frames, height, width)[None])[0]


def clean_prompt(text: str) -> str:
    """The pipelines' ``prompt_clean`` (ftfy, HTML unescape, whitespace) so tokens match theirs."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    return prompt_clean(text)


@torch.no_grad()
def encode_text(tokenizer, text_encoder, texts: list[str], text_len: int) -> list[torch.Tensor]:
    """umT5 embeddings [L_i, D] float32 per text, L_i = its token count (<= text_len), computed as
    diffusers' ``_get_t5_prompt_embeds`` computes them before zero-padding to ``text_len``."""
    if not texts:
        return []
    tokens = tokenizer([clean_prompt(t) for t in texts], padding="max_length", max_length=text_len,
                       truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    device = next(text_encoder.parameters()).device
    mask = tokens.attention_mask
    hidden = text_encoder(tokens.input_ids.to(device), mask.to(device)).last_hidden_state
    lengths = mask.gt(0).sum(dim=1).tolist()
    return [h[:n].float().cpu().contiguous() for h, n in zip(hidden, lengths, strict=True)]
