"""Video Swin-T (3D) with gated relative position biases: the backbone of FAST-VQA (Wu et al., "FAST-VQA:
Efficient End-to-end Video Quality Assessment with Fragment Sampling", ECCV 2022, section 3.3) and of the
Koala-36M Training Suitability Assessment model (Wang et al. 2024, section 3.3), which fine-tunes it.

Written here from the papers and the released checkpoints' structure, so their state dicts load with
``strict=True`` (key names below are the public ones, kept verbatim):
- ``patch_embed.proj`` (Conv3d, 2x4x4 patches) + ``patch_embed.norm``;
- ``layers.{i}.blocks.{j}``: ``norm1``, ``attn.{qkv, proj, relative_position_bias_table,
  relative_position_index, fragment_position_bias_table}``, ``norm2``, ``mlp.{fc1, fc2}``;
  ``layers.{i}.downsample.{norm, reduction}`` (patch merging, all stages but the last);
- ``norm`` over the last stage's channels.
Swin-T: embed 96, depths 2-2-6-2, heads 3-6-12-24, window 8x7x7; fragment biases in stages 0-2.

Gated relative position bias (FAST-VQA eq. 4): two bias tables per attention; for a token pair in the same
fragment the "fragment" table applies, otherwise the ordinary one. The released code forms the gate as
g = |delta fragment index| summed over the three axes (0 inside a fragment, 1, 2, ... across) and mixes
``B_rel * g + B_frag * (1 - g)``; that exact rule is what the weights were trained with, so it is kept.
Fragments are the window's own grid laid over the token map (7x7 at 224 px: one 32 px fragment each).
Windows scale with the input as the release does (``window * input / (32, 224, 224)``, clamped to the map),
so the public input size gives the public windows; the shifted-window mask uses -100, as released.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod

import torch
import torch.nn.functional as F
from torch import nn

BASE_INPUT = (32, 224, 224)  # frames, height, width the windows were sized for
SWIN_T = {"embed_dim": 96, "depths": (2, 2, 6, 2), "heads": (3, 6, 12, 24), "window": (8, 7, 7),
          "frag_bias": (True, True, True, False), "mlp_ratio": 4.0, "patch": (2, 4, 4)}


def fit_window(size, window, shift) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Clamp the window to the feature map; an axis that fits whole gets no shift."""
    win = tuple(s if s <= w else w for s, w in zip(size, window, strict=True))
    return win, tuple(0 if s <= w else sh for s, w, sh in zip(size, window, shift, strict=True))


def partition(x: torch.Tensor, win) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * windows, tokens per window, C), windows in raster order."""
    b, d, h, w, c = x.shape
    x = x.view(b, d // win[0], win[0], h // win[1], win[1], w // win[2], win[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, prod(win), c)


def unpartition(x: torch.Tensor, win, b: int, d: int, h: int, w: int) -> torch.Tensor:
    x = x.view(b, d // win[0], h // win[1], w // win[2], win[0], win[1], win[2], -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


def relative_index(window) -> torch.Tensor:
    """Pairwise index into a (2Wd-1)(2Wh-1)(2Ww-1) table: row-major over the clamped coordinate deltas."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(n) for n in window], indexing="ij")).flatten(1)
    delta = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0) + torch.tensor(window) - 1
    return delta[..., 0] * (2 * window[1] - 1) * (2 * window[2] - 1) + delta[..., 1] * (2 * window[2] - 1) + delta[..., 2]


@lru_cache(maxsize=64)
def shift_mask(dims, win, shift) -> torch.Tensor:
    """(windows, N, N) 0 / -100: after the cyclic roll, tokens from different source regions must not
    attend. Regions are labelled by the released slicing (the last slice of an unshifted axis covers it)."""
    label = torch.zeros(dims)
    count = 0
    cuts = [(slice(-w), slice(-w, -s), slice(-s, None)) for w, s in zip(win, shift, strict=True)]
    for a in cuts[0]:
        for b in cuts[1]:
            for c in cuts[2]:
                label[a, b, c] = count
                count += 1
    lab = partition(label[None, ..., None], win).squeeze(-1)
    return (lab[:, None, :] != lab[:, :, None]).float() * -100.0


@lru_cache(maxsize=64)
def fragment_gate(dims, win, shift) -> torch.Tensor:
    """(windows, N, N): sum over axes of |fragment index difference| of each token pair (0 = same fragment).
    The fragment grid is (1, Wh, Ww) stretched over the padded map by nearest-neighbour, as released."""
    grid = torch.stack(torch.meshgrid(torch.arange(1), torch.arange(win[1]), torch.arange(win[2]), indexing="ij"))
    coords = F.interpolate(grid[None].float(), size=dims).long().permute(0, 2, 3, 4, 1)
    coords = torch.roll(coords, shifts=[-s for s in shift], dims=(1, 2, 3))
    c = partition(coords, win)
    return (c[:, None, :] - c[:, :, None]).abs().sum(-1).float()


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window, frag_bias: bool):
        super().__init__()
        self.heads, self.window = heads, tuple(window)
        size = prod(2 * w - 1 for w in window)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(size, heads))
        if frag_bias:
            self.fragment_position_bias_table = nn.Parameter(torch.zeros(size, heads))
        self.register_buffer("relative_position_index", relative_index(self.window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _bias(self, table: torch.Tensor, win, n: int) -> torch.Tensor:
        # the clamped window's pairs are the top-left corner of the full window's index (deltas only)
        idx = self.relative_position_index.reshape(*self.window, *self.window)
        idx = idx[: win[0], : win[1], : win[2], : win[0], : win[1], : win[2]].reshape(-1)
        return table[idx].reshape(n, n, -1).permute(2, 0, 1)  # heads, N, N

    def forward(self, x: torch.Tensor, win, gate: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        bias = self._bias(self.relative_position_bias_table, win, n)[None]
        if hasattr(self, "fragment_position_bias_table"):
            g = gate[:, None]
            bias = bias * g + self._bias(self.fragment_position_bias_table, win, n)[None] * (1 - g)
        nw = gate.shape[0]
        attn = attn.view(b // nw, nw, self.heads, n, n) + bias[None]
        if mask is not None:
            attn = attn + mask[None, :, None]
        attn = attn.view(b, self.heads, n, n).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window, shift, mlp_ratio: float, frag_bias: bool):
        super().__init__()
        self.shift = tuple(shift)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, frag_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, window) -> torch.Tensor:
        b, d, h, w, _ = x.shape
        win, shift = fit_window((d, h, w), window, self.shift)
        pad = [(-s) % k for s, k in zip((d, h, w), win, strict=True)]
        y = F.pad(self.norm1(x), (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))  # zeros after the norm, as released
        dims = tuple(y.shape[1:4])
        rolled = any(s > 0 for s in shift)
        if rolled:
            y = torch.roll(y, shifts=[-s for s in shift], dims=(1, 2, 3))
        gate = fragment_gate(dims, win, shift).to(x.device)
        mask = shift_mask(dims, win, shift).to(x.device) if rolled else None
        y = unpartition(self.attn(partition(y, win), win, gate, mask), win, b, *dims)
        if rolled:
            y = torch.roll(y, shifts=list(shift), dims=(1, 2, 3))
        x = x + y[:, :d, :h, :w]
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 spatial merge: concatenation order (h, w) = (0,0), (1,0), (0,1), (1,1), then norm and 4C -> 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:4]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, :, i::2, j::2] for i, j in ((0, 0), (1, 0), (0, 1), (1, 1))], -1)  # i: rows, j: columns
        return self.reduction(self.norm(x))


class Stage(nn.Module):
    def __init__(self, dim, depth, heads, window, mlp_ratio, frag_bias, downsample):
        super().__init__()
        shift = tuple(k // 2 for k in window)  # every other block shifts by half the (unclamped) window
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, window, (0, 0, 0) if i % 2 == 0 else shift, mlp_ratio,
                                              frag_bias) for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, window) -> torch.Tensor:
        x = x.permute(0, 2, 3, 4, 1)
        for block in self.blocks:
            x = block(x, window)
        if self.downsample is not None:
            x = self.downsample(x)
        return x.permute(0, 4, 1, 2, 3)


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim: int):
        super().__init__()
        self.patch = tuple(patch)
        self.proj = nn.Conv3d(3, dim, kernel_size=self.patch, stride=self.patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w = x.shape[2:]
        pd, ph, pw = ((-s) % p for s, p in zip((d, h, w), self.patch, strict=True))
        x = self.proj(F.pad(x, (0, pw, 0, ph, 0, pd)))
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class SwinFragments3D(nn.Module):
    """(B, 3, T, H, W) normalised fragments -> (B, 8 * embed_dim, T/2, H/32, W/32) features."""

    def __init__(self, embed_dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), window=(8, 7, 7),
                 frag_bias=(True, True, True, False), mlp_ratio=4.0, patch=(2, 4, 4)):
        super().__init__()
        self.window = tuple(window)
        self.patch_embed = PatchEmbed(patch, embed_dim)
        last = len(depths) - 1
        self.layers = nn.ModuleList(Stage(embed_dim * 2**i, depths[i], heads[i], window, mlp_ratio, frag_bias[i],
                                          i < last) for i in range(len(depths)))
        self.norm = nn.LayerNorm(embed_dim * 2**last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = tuple(w * s // b for w, s, b in zip(self.window, x.shape[2:], BASE_INPUT, strict=True))
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x, window)
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
