"""Wan VAE at the edges of diffusion forcing: frames -> normalized latents, and latents -> frames as a stream.

The DiT works on normalized latents ((z - latents_mean) / latents_std), as the diffusers SkyReels-V2
pipelines do. Decoding is streamed: the Wan decoder is causal in time and the diffusers VAE itself decodes
one latent frame at a time through a feature cache, so feeding it the frames of each finished window, with
the cache kept between calls, performs the very same operations as one `vae.decode` of the whole video
while holding only a window of frames (infinite-length generation, report section 3.4.2: memory must not grow with the length).

The Wan VAE's RMS norms go through `F.normalize`, whose vector norm over the channel dimension of a 5-D
tensor takes a strided path on CPU ~40x slower than a plain sum of squares, half the decode time at small
sizes; `fast_vae` computes the same quantity the plain way while the VAE runs (float rounding apart, ~1e-7).
Its causal 3-D convolutions have few channels and large frames at small model widths; PyTorch's CPU
heuristic picks oneDNN by N*C*D*H only (tuned for 2-D inputs), so they fall to the im2col `slow_conv3d`,
3-4x slower than oneDNN at 64x64; `fast_vae` sends the large ones to oneDNN (the same convolution).
"""

from __future__ import annotations

import types
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from models.generate_config import VAE_TEMPORAL_STRIDE


def _rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    # WanRMS_norm.forward: F.normalize(x) * sqrt(dim) * gamma + bias, normalized in fp32 for half types.
    dim = 1 if norm.channel_first else -1
    xf = x.float()
    normalized = xf / xf.square().sum(dim, keepdim=True).sqrt().clamp_min(1e-12)  # F.normalize's eps
    return normalized.to(x.dtype) * norm.scale * norm.gamma + norm.bias


# Input elements from which oneDNN beats the im2col path for the Wan VAE's 3-D convolutions on CPU (measured:
# 3x at 4x6x66x66, 1.5x at 4x6x34x34, slower below ~16k elements).
_ONEDNN_MIN_ELEMENTS = 16384


def _conv3d(conv, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # nn.Conv3d._conv_forward for zero padding (the Wan causal convs pad explicitly and keep padding 0).
    if x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() >= _ONEDNN_MIN_ELEMENTS \
            and torch.backends.mkldnn.is_available():
        return torch.mkldnn_convolution(x.contiguous(), weight, bias, conv.padding, conv.stride, conv.dilation,
                                        conv.groups)
    return F.conv3d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


@contextmanager
def fast_vae(vae):
    """Route every WanRMS_norm of `vae` through `_rms_norm`, and its causal 3-D convolutions through `_conv3d`,
    for the duration (instance-level methods, removed on exit)."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm

    norms = [m for m in vae.modules() if isinstance(m, WanRMS_norm)]
    convs = [m for m in vae.modules() if isinstance(m, WanCausalConv3d) and m.padding_mode == "zeros"]
    for norm in norms:
        norm.forward = types.MethodType(_rms_norm, norm)
    for conv in convs:
        conv._conv_forward = types.MethodType(_conv3d, conv)
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward
        for conv in convs:
            del conv._conv_forward


def _stats(vae, device) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = vae.config
    shape = (1, cfg.z_dim, 1, 1, 1)
    mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(shape).to(device)
    std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(shape).to(device)
    return mean, std


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 or [0, 1] float frames -> (1, 3, T, H, W) in [-1, 1]."""
    frames = np.asarray(frames)
    pixels = torch.from_numpy(frames).float()
    if frames.dtype == np.uint8:
        pixels = pixels / 255.0
    return pixels.permute(3, 0, 1, 2)[None] * 2.0 - 1.0


@torch.no_grad()
def encode_frames(vae, frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) frames -> (1, C, 1 + (T - 1) // 4, h, w) normalized latents (VAE mode, no sampling)."""
    pixels = frames_to_tensor(frames).to(vae.device, vae.dtype)
    with fast_vae(vae):
        latent = vae.encode(pixels).latent_dist.mode().float()
    mean, std = _stats(vae, latent.device)
    return (latent - mean) * (1.0 / std)


def to_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, T, H, W) in [-1, 1] -> (T, H, W, 3) float32 in [0, 1], without full-size temporaries."""
    return video[0].float().mul_(0.5).add_(0.5).clamp_(0, 1).permute(1, 2, 3, 0).cpu().numpy()


SPATIAL_STRIDE = 8  # Wan2.1 VAE: one latent pixel per 8 x 8 pixels
# Output pixels (frames x height x width) one decoder call may produce: one latent frame (4 pixel frames) at
# 960x544, the activation size the reference's frame-by-frame decode peaks at; small videos take many frames
# per call (fewer, larger convolutions: ~1.5x faster at 64x64 on CPU).
DECODE_PIXELS = VAE_TEMPORAL_STRIDE * 960 * 544


class StreamingDecoder:
    """Decode normalized latents chunk after chunk; the concatenated output equals one `vae.decode` call.

    The Wan decoder is causal in time: every causal convolution caches the last two frames it saw, so a call
    on k latent frames performs the same convolutions as k calls on one (diffusers decodes one at a time);
    only the stream's first frame must go alone, where the temporal upsamplers replicate instead of convolve.
    """

    def __init__(self, vae):
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self.vae = vae
        # One cache slot per causal conv of the decoder, as `AutoencoderKLWan.clear_cache` sizes its own.
        self.cache = [None] * sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        self.first = True

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        """(1, C, f, h, w) normalized latents -> (frames, H, W, 3) float32 in [0, 1]: 1 + 4 (f - 1) frames for
        the first chunk of a stream, 4 f for every later one."""
        vae = self.vae
        mean, std = _stats(vae, latents.device)
        x = vae.post_quant_conv((latents.float() * std + mean).to(vae.dtype))
        outs, i = [], 0
        # Latent frames per decoder call: as many as fit the pixel budget (one at 960x544, as the reference),
        # the first of a stream alone (its temporal upsamplers start on it).
        per_call = max(1, DECODE_PIXELS // (VAE_TEMPORAL_STRIDE * latents.shape[3] * latents.shape[4]
                                            * SPATIAL_STRIDE ** 2))
        with fast_vae(vae):
            while i < x.shape[2]:
                size = 1 if self.first else per_call
                outs.append(vae.decoder(x[:, :, i:i + size], feat_cache=self.cache, feat_idx=[0],
                                        first_chunk=self.first))
                self.first, i = False, i + size
        return to_frames(torch.cat(outs, dim=2).clamp_(-1.0, 1.0))


def decode(vae, latents: torch.Tensor) -> np.ndarray:
    """Normalized latents -> (frames, H, W, 3) in [0, 1] through the Wan VAE."""
    return StreamingDecoder(vae)(latents)
