"""Image-to-video from the full-sequence T2V DiT (report section 5.5, SkyReels-V2-I2V): the math.

The report fine-tunes the T2V model with first-frame conditioning. We follow the layout of diffusers'
``SkyReelsV2ImageToVideoPipeline`` (the Wan2.1-I2V design) so the result loads and runs there unchanged:

- the DiT input is ``cat([noisy latents (z), mask (4), condition latents (z)], channels)``: the condition is
  the VAE encoding of the first frame followed by grey frames (``condition_video``), the mask marks the
  first frame's 4 pixel frames (one per VAE temporal stride step, ``first_frame_mask``);
- CLIP image features (the penultimate hidden layer) enter every block through an extra cross-attention
  (``add_k_proj``/``add_v_proj``) after a projection (``image_embedder``), sized by ``image_dim``.

``widen_to_i2v`` turns the T2V DiT into that transformer so that at step 0 it IS the T2V model on the noisy
part: the new input channels of the patch embedding are zero, and the image cross-attention's value
projection is zero (its output, added to the text attention's, is exactly 0). Training then opens both paths
from a known-good start, as zero-initialised control branches do (ControlNet, Zhang et al. 2023).
"""

from __future__ import annotations

import numpy as np
import torch

VAE_TEMPORAL_STRIDE = 4  # Wan VAE: one latent frame per 4 pixel frames (after the first)
TEXT_TOKENS = 512  # diffusers' I2V attention takes the last 512 context tokens as text (hard-coded there)


def i2v_in_channels(z_dim: int, temporal: int = VAE_TEMPORAL_STRIDE) -> int:
    return z_dim + temporal + z_dim


def pixel_frames(latent_frames: int, temporal: int = VAE_TEMPORAL_STRIDE) -> int:
    return 1 + temporal * (latent_frames - 1)


def is_i2v(config) -> bool:
    """Whether a DiT config (or ``transformer/config.json``) is an image-to-video transformer."""
    return config.get("image_dim") is not None


def widen_to_i2v(t2v, image_dim: int, seed: int = 0):
    """The I2V transformer that equals ``t2v`` on its noisy-latent input at initialisation (see module doc).
    New parameters other than the zeroed ones are drawn from a generator seeded ``seed`` (deterministic)."""
    from diffusers import SkyReelsV2Transformer3DModel

    config = t2v.config
    if is_i2v(config):
        raise ValueError("the DiT is already an image-to-video transformer (image_dim is set); start sft-i2v from "
                         "a text-to-video checkpoint (train.stages.sft-i2v.init_from: sft-540p)")
    z_dim = config.out_channels or config.in_channels
    if config.in_channels != z_dim:
        raise ValueError(f"the DiT has in_channels={config.in_channels} but out_channels={z_dim}: not a T2V DiT")
    inner = config.num_attention_heads * config.attention_head_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Without the private keys: "_use_default_values" would reset image_dim and added_kv_proj_dim to None.
        wide = SkyReelsV2Transformer3DModel.from_config(
            {**{k: v for k, v in config.items() if not k.startswith("_")}, "in_channels": i2v_in_channels(z_dim), "out_channels": z_dim, "image_dim": image_dim,
             "added_kv_proj_dim": inner})
    old = t2v.state_dict()
    new = wide.state_dict()
    unexpected = sorted(set(old) - set(new))
    if unexpected:
        raise ValueError(f"widening: T2V weights without a place in the I2V transformer: {unexpected[:5]}")
    for key, value in old.items():
        if key == "patch_embedding.weight":
            weight = torch.zeros_like(new[key])
            weight[:, :z_dim] = value
            new[key] = weight
        else:
            new[key] = value.to(new[key].dtype)
    for key in new:
        if ".add_v_proj." in key:  # the image branch adds exactly 0 until training opens it
            new[key] = torch.zeros_like(new[key])
    wide.load_state_dict(new)
    dtype = next(t2v.parameters()).dtype
    return wide if dtype == torch.float32 else wide.to(dtype)


def first_frame_mask(batch: int, latent_frames: int, height: int, width: int,
                     temporal: int = VAE_TEMPORAL_STRIDE) -> torch.Tensor:
    """[B, temporal, F, h, w] mask channels as diffusers' I2V ``prepare_latents`` builds them (no last image):
    a per-pixel-frame mask (1 = given) folded into the latent frames, ``temporal`` pixel frames per channel,
    the first latent frame standing for the first pixel frame repeated ``temporal`` times."""
    frames = pixel_frames(latent_frames, temporal)
    mask = torch.ones(batch, 1, frames, height, width)
    mask[:, :, 1:] = 0
    mask = torch.cat([mask[:, :, :1].repeat_interleave(temporal, dim=2), mask[:, :, 1:]], dim=2)
    return mask.view(batch, -1, temporal, height, width).transpose(1, 2)


def condition_video(first: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, 3, frames, H, W] in [-1, 1]: the first frame ([B, 3, H, W] in [-1, 1]) then zeros (mid grey),
    the pixel video diffusers encodes into the condition latents."""
    rest = first.new_zeros(first.shape[0], first.shape[1], frames - 1, *first.shape[2:])
    return torch.cat([first.unsqueeze(2), rest], dim=2)


@torch.no_grad()
def condition_latents(vae, first: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """[B, z, F, h, w] normalised condition latents of first frames [B, 3, H, W] in [-1, 1] (posterior mode,
    the pipeline's ``sample_mode="argmax"``), ready to concatenate after the mask."""
    from models.latent_encode import normalise_latents

    param = next(vae.parameters())
    video = condition_video(first.to(param.device, param.dtype), pixel_frames(latent_frames))
    return normalise_latents(vae, vae.encode(video).latent_dist.mode()).float()


@torch.no_grad()
def decode_first_frames(vae, latents: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1]: the first pixel frame of normalised latents [B, z, F, h, w]. The Wan VAE is
    causal in time, so the first latent frame holds the first pixel frame alone: decoding it reconstructs
    that frame without the rest of the clip (the condition image a training sample stands for)."""
    from models.latent_encode import denormalise_latents

    param = next(vae.parameters())
    raw = denormalise_latents(vae, latents[:, :, :1].to(param.device, torch.float32)).to(param.dtype)
    return vae.decode(raw).sample[:, :, 0].float().clamp(-1, 1)


def to_uint8(frames: torch.Tensor) -> list[np.ndarray]:
    """[B, 3, H, W] in [-1, 1] -> B uint8 HWC images (what a user hands the pipeline as ``image``)."""
    x = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [img.permute(1, 2, 0).cpu().numpy() for img in x]


@torch.no_grad()
def image_embeddings(image_encoder, image_processor, images: list[np.ndarray]) -> torch.Tensor:
    """[B, tokens, image_dim]: CLIP's penultimate hidden states, as the pipeline's ``encode_image``."""
    inputs = image_processor(images=images, return_tensors="pt").to(next(image_encoder.parameters()).device)
    return image_encoder(**inputs, output_hidden_states=True).hidden_states[-2].float()


def i2v_input(noisy: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """The DiT input: noisy latents [B, z, F, h, w] then the condition [B, 4 + z, F, h, w] (mask, latents)."""
    return torch.cat([noisy, condition.to(noisy.dtype)], dim=1)


def pad_text(text: torch.Tensor) -> torch.Tensor:
    """[B, 512, D]: the I2V attention reads the last 512 context tokens as text, so the text part must be
    exactly that long (diffusers pads prompts to max_sequence_length=512 with zeros)."""
    if text.shape[1] == TEXT_TOKENS:
        return text
    if text.shape[1] > TEXT_TOKENS:
        raise ValueError(f"text features of {text.shape[1]} tokens: the I2V transformer takes 512; "
                         "set train.latents.text_len: 512")
    return torch.cat([text, text.new_zeros(text.shape[0], TEXT_TOKENS - text.shape[1], text.shape[2])], dim=1)
