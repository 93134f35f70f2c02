"""FAST-VQA (Wu et al., ECCV 2022): video quality from "fragments", loaded from the public checkpoint format.

The public release (FAST-VQA-B, ``FAST_VQA_B_1_4.pth``) is a ``torch.save`` of ``{"state_dict": ...}`` with
two parts, key names kept verbatim here so the file loads with ``strict=True``:
- ``fragments_backbone.*``: Video Swin-T with gated relative position biases (:mod:`models.swin3d_fragments`);
- ``vqa_head.fc_hid`` (Conv3d 1x1x1, 768 -> 64), GELU, ``vqa_head.fc_last`` (Conv3d 1x1x1, 64 -> 1): a
  quality score per output position (paper section 3.4); the clip's score is their mean.
The same layout is Koala-36M's training-suitability checkpoint (:mod:`models.vtss_koala`).

Input (paper section 3.1, "grid mini-patch sampling", and the release's test options): frames sampled as
``num_clips`` clips of 32 frames at stride 2; in each frame a 7x7 grid of 32x32 px patches at native
resolution (a video smaller than 224 px is first upscaled bilinearly, and the grid is laid on the
pre-upscale size, as released), spliced into 224x224; ImageNet mean/std on 0-255 RGB. The release draws
each patch's offset inside its grid cell at random per call; here the centre of that range (its
expectation) is taken so a clip's score is deterministic. The raw mean is mapped into (0, 1) as the
release's ``vqa.py`` does: ``sigmoid((raw - mean) / std)`` with its FAST-VQA constants.

Architecture sizes are read from the state dict (embed width, depths, heads, head width), so a tiny
checkpoint of the same layout loads through the same code. Input here: RGB uint8 frames (T, H, W, 3).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.swin3d_fragments import SWIN_T, SwinFragments3D

MEAN = (123.675, 116.28, 103.53)  # ImageNet statistics on 0-255 RGB, as the release normalises
STD = (58.395, 57.12, 57.375)
FAST_VQA_RESCALE = (-0.110198185, 0.04178565)  # the release's vqa.py: (mean, std) of FAST-VQA-B raw scores
GRID, PATCH = 7, 32  # fragments per side, fragment size in pixels
FORMAT = ("the FAST-VQA checkpoint layout (also Koala-36M's TSA): {'state_dict': {fragments_backbone.* (Video Swin-T "
          "3D, patch_embed / layers.N.blocks.M / norm), vqa_head.fc_hid.*, vqa_head.fc_last.*}}")


class VQAHead(nn.Module):
    """Per-position regression: 1x1x1 convolutions (dropout at training only, so none here)."""

    def __init__(self, in_channels: int = 768, hidden: int = 64):
        super().__init__()
        self.fc_hid = nn.Conv3d(in_channels, hidden, 1)
        self.fc_last = nn.Conv3d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_last(F.gelu(self.fc_hid(x)))


class FragmentEvaluator(nn.Module):
    """Backbone + head under the public attribute names; (B, 3, T, 224, 224) -> (B, 1, T/2, 7, 7) scores."""

    def __init__(self, arch: dict, hidden: int):
        super().__init__()
        self.fragments_backbone = SwinFragments3D(**arch)
        self.vqa_head = VQAHead(arch["embed_dim"] * 2 ** (len(arch["depths"]) - 1), hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vqa_head(self.fragments_backbone(x))


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors from a ``.pth``/``.pt`` (``{"state_dict": ...}`` or a bare state dict) or ``.safetensors``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file (put the public weights there or unset the path)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles of arbitrary objects are refused: say how to get a plain one
        raise ValueError(f"{path}: not loadable as plain tensors ({type(exc).__name__}); re-save it as "
                         "torch.save({'state_dict': model.state_dict()}, path)") from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds a {type(data).__name__}, not a state dict; expected {FORMAT}")
    return data


def infer_arch(sd: dict[str, torch.Tensor], prefix: str = "fragments_backbone.") -> tuple[dict, int]:
    """The Swin sizes and the head width a state dict of the public layout was saved with."""
    if f"{prefix}patch_embed.proj.weight" not in sd or "vqa_head.fc_hid.weight" not in sd:
        some = ", ".join(sorted(sd)[:6])
        raise ValueError(f"not a fragment-VQA checkpoint (keys start {some}, ...); expected {FORMAT}")
    proj = sd[f"{prefix}patch_embed.proj.weight"]
    depths, heads, frag = [], [], []
    while f"{prefix}layers.{len(depths)}.blocks.0.norm1.weight" in sd:
        i = len(depths)
        depths.append(sum(1 for k in sd if k.startswith(f"{prefix}layers.{i}.blocks.") and k.endswith(".norm1.weight")))
        heads.append(int(sd[f"{prefix}layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1]))
        frag.append(f"{prefix}layers.{i}.blocks.0.attn.fragment_position_bias_table" in sd)
    if not depths:
        raise ValueError(f"no {prefix}layers.0.blocks.0.*: expected {FORMAT}")
    embed = int(proj.shape[0])
    mlp_ratio = sd[f"{prefix}layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed
    arch = {"embed_dim": embed, "depths": tuple(depths), "heads": tuple(heads), "window": SWIN_T["window"],
            "frag_bias": tuple(frag), "mlp_ratio": mlp_ratio, "patch": tuple(proj.shape[2:])}
    return arch, int(sd["vqa_head.fc_hid.weight"].shape[0])


def load_evaluator(path: str, device: str = "cpu") -> FragmentEvaluator:
    """The model at ``path``, strictly: a clear error naming missing / unexpected / misshapen keys."""
    sd = read_state_dict(path)
    arch, hidden = infer_arch(sd)
    model = FragmentEvaluator(arch, hidden)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    shapes = [f"{k} {tuple(sd[k].shape)} (expected {tuple(own[k].shape)})" for k in own
              if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{name}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if keys]
        raise ValueError(f"{path}: does not match {FORMAT} (window {SWIN_T['window']}); " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def fast_clip_indices(num_frames: int, clip_len: int, interval: int, num_clips: int) -> np.ndarray:
    """FAST-VQA's test-time temporal sampling: ``num_clips`` evenly spaced clips of ``clip_len`` frames at
    stride ``interval``, each offset by half the spacing; indices wrap around a short video."""
    span = clip_len * interval
    if num_frames > span - 1:
        spacing = (num_frames - span + 1) / num_clips
        offsets = (np.arange(num_clips) * spacing + spacing / 2).astype(np.int64)
    else:
        offsets = np.zeros(num_clips, np.int64)
    return np.mod(offsets[:, None] + np.arange(clip_len)[None] * interval, num_frames).reshape(-1)


def spatial_fragments(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (3, T, 224, 224) uint8-valued float: the 7x7 grid of 32 px patches."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # C, T, H, W
    _, _, h, w = video.shape
    size = GRID * PATCH
    ratio = min(h / size, w / size)
    if ratio < 1:  # upscale small videos (bilinear on 0-1, back to uint8 by truncation, as released)
        video = (F.interpolate(video.float() / 255.0, scale_factor=1 / ratio, mode="bilinear") * 255.0).to(torch.uint8)
    out = torch.zeros(3, video.shape[1], size, size)
    rows = [min(h // GRID * i, h - PATCH) for i in range(GRID)]  # grid on the pre-upscale size, as released
    cols = [min(w // GRID * j, w - PATCH) for j in range(GRID)]
    dh = max(h // GRID - PATCH, 0) // 2  # centre of the release's random offset range within a cell
    dw = max(w // GRID - PATCH, 0) // 2
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            out[:, :, i * PATCH:(i + 1) * PATCH, j * PATCH:(j + 1) * PATCH] = \
                video[:, :, r + dh:r + dh + PATCH, c + dw:c + dw + PATCH].float()
    return out


def fragment_batch(frames: np.ndarray, indices: np.ndarray, clip_len: int) -> torch.Tensor:
    """Frames at ``indices`` -> normalised (clips, 3, clip_len, 224, 224), the model's input."""
    video = spatial_fragments(frames[indices])
    mean, std = torch.tensor(MEAN).view(3, 1, 1, 1), torch.tensor(STD).view(3, 1, 1, 1)
    video = (video - mean) / std
    return video.reshape(3, -1, clip_len, *video.shape[2:]).transpose(0, 1).contiguous()


def mean_score(model: FragmentEvaluator, batch: torch.Tensor) -> float:
    """The mean of the head's per-position scores over every clip (the release's clip score)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        return float(model(batch.to(device)).mean())


class FastVQA:
    """FAST-VQA from a public-format checkpoint: ``score(frames) -> (raw, score in (0, 1))``."""

    def __init__(self, path: str, clip_len: int = 32, num_clips: int = 4, interval: int = 2,
                 rescale: tuple[float, float] = FAST_VQA_RESCALE, device: str | None = None):
        self.model = load_evaluator(path, device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.clip_len, self.num_clips, self.interval, self.rescale = clip_len, num_clips, interval, rescale

    def score(self, frames: np.ndarray) -> tuple[float, float]:
        idx = fast_clip_indices(len(frames), self.clip_len, self.interval, self.num_clips)
        raw = mean_score(self.model, fragment_batch(frames, idx, self.clip_len))
        return raw, float(1.0 / (1.0 + np.exp(-(raw - self.rescale[0]) / self.rescale[1])))
