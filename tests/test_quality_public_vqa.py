"""FAST-VQA's public checkpoint format (models.vqa_fast) and the fragment Swin backbone it shares with
Koala-36M's VTSS: a tiny checkpoint with the public key layout, built here, loads strictly and reproduces
scores computed by hand; a wrong file is refused with a message naming the keys and the format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.swin3d_fragments import SwinBlock
from models.vqa_fast import (
    FAST_VQA_RESCALE,
    FastVQA,
    FragmentEvaluator,
    fast_clip_indices,
    load_evaluator,
    spatial_fragments,
)

# tiny widths and depths; the public window (8, 7, 7), patch (2, 4, 4), mlp ratio 4, head 768 -> 64 kept in form
TINY = {"embed_dim": 8, "depths": (2, 2, 2, 2), "heads": (1, 2, 2, 4), "window": (8, 7, 7),
        "frag_bias": (True, True, True, False), "mlp_ratio": 4.0, "patch": (2, 4, 4)}
HIDDEN = 16


def public_keys(depths, frag_bias) -> set[str]:
    """The release's state-dict names (FAST-VQA-B / Koala TSA), written out from its module tree."""
    b = "fragments_backbone."
    keys = {f"{b}patch_embed.proj.weight", f"{b}patch_embed.proj.bias", f"{b}patch_embed.norm.weight",
            f"{b}patch_embed.norm.bias", f"{b}norm.weight", f"{b}norm.bias", "vqa_head.fc_hid.weight",
            "vqa_head.fc_hid.bias", "vqa_head.fc_last.weight", "vqa_head.fc_last.bias"}
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"{b}layers.{i}.blocks.{j}."
            keys |= {p + k for k in ("norm1.weight", "norm1.bias", "attn.relative_position_bias_table",
                                     "attn.relative_position_index", "attn.qkv.weight", "attn.qkv.bias",
                                     "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                                     "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")}
            if frag_bias[i]:
                keys.add(p + "attn.fragment_position_bias_table")
        if i < len(depths) - 1:
            keys |= {f"{b}layers.{i}.downsample.{k}" for k in ("reduction.weight", "norm.weight", "norm.bias")}
    return keys


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    sd = FragmentEvaluator(TINY, HIDDEN).state_dict()
    return {k: (torch.randn_like(v) * 0.3 if v.is_floating_point() else v) for k, v in sd.items()}


def constant_feature_state(seed: int = 0):
    """Final norm weight 0, bias beta: every backbone output position is beta, whatever the frames."""
    sd = tiny_state(seed)
    beta = torch.linspace(-1.0, 1.0, 8 * TINY["embed_dim"])
    sd["fragments_backbone.norm.weight"] = torch.zeros_like(beta)
    sd["fragments_backbone.norm.bias"] = beta
    return sd, beta


def head_by_hand(sd: dict, beta: torch.Tensor) -> float:
    """fc_last(gelu(fc_hid(beta))) with the 1x1x1 convolutions as matrix products and GELU from erf."""
    w1, b1 = sd["vqa_head.fc_hid.weight"].flatten(1).double(), sd["vqa_head.fc_hid.bias"].double()
    w2, b2 = sd["vqa_head.fc_last.weight"].flatten(1).double(), sd["vqa_head.fc_last.bias"].double()
    z = w1 @ beta.double() + b1
    g = 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))
    return float(w2 @ g + b2)


def test_the_tiny_checkpoint_has_the_public_key_layout_and_shapes():
    sd = tiny_state()
    assert set(sd) == public_keys(TINY["depths"], TINY["frag_bias"])
    table = sd["fragments_backbone.layers.2.blocks.1.attn.relative_position_bias_table"]
    assert table.shape == ((2 * 8 - 1) * (2 * 7 - 1) * (2 * 7 - 1), 2)  # (2Wd-1)(2Wh-1)(2Ww-1) x heads
    assert sd["fragments_backbone.layers.0.blocks.0.attn.relative_position_index"].shape == (392, 392)
    assert sd["vqa_head.fc_hid.weight"].shape == (HIDDEN, 64, 1, 1, 1)  # Conv3d 1x1x1 over 8 x embed channels
    assert sd["fragments_backbone.patch_embed.proj.weight"].shape == (8, 3, 2, 4, 4)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_fast_vqa_loads_a_tiny_public_checkpoint_and_scores_by_hand(tmp_path, suffix):
    sd, beta = constant_feature_state()
    path = str(tmp_path / f"FAST_VQA_B_1_4{suffix}")
    if suffix == ".pth":
        torch.save({"state_dict": sd}, path)  # the release's wrapping
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    frames = np.random.default_rng(1).integers(0, 256, (10, 240, 320, 3), dtype=np.uint8)
    raw, score = FastVQA(path, clip_len=4, num_clips=2, device="cpu").score(frames)
    expected = head_by_hand(sd, beta)
    assert raw == pytest.approx(expected, abs=1e-5)
    mean, std = FAST_VQA_RESCALE
    assert score == pytest.approx(1 / (1 + math.exp(-(expected - mean) / std)), abs=1e-4)
    if suffix != ".pth":
        return
    # the frames matter once the final norm does: a different video, a different score
    sd2 = tiny_state()
    torch.save({"state_dict": sd2}, tmp_path / "full.pth")
    vqa = FastVQA(str(tmp_path / "full.pth"), clip_len=4, num_clips=2, device="cpu")
    assert vqa.score(frames)[0] != pytest.approx(vqa.score(255 - frames)[0], abs=1e-6)


def test_temporal_and_spatial_fragment_sampling_by_hand():
    # 100 frames, clips of 4 at stride 2, 2 clips: span 8, spacing (100 - 8 + 1) / 2 = 46.5, offsets 23 and 69
    assert fast_clip_indices(100, 4, 2, 2).tolist() == [23, 25, 27, 29, 69, 71, 73, 75]
    assert fast_clip_indices(5, 4, 2, 1).tolist() == [0, 2, 4, 1]  # a short video wraps around
    rows, cols = np.meshgrid(np.arange(448), np.arange(448), indexing="ij")
    frame = np.stack([rows % 256, cols % 256, (rows // 256) * 16 + cols // 256], -1).astype(np.uint8)[None]
    out = spatial_fragments(frame)
    assert out.shape == (3, 1, 224, 224)
    # 448 px: cells of 64, a 32 px patch centred in its cell: patch (2, 3) is rows 144..175, cols 208..239
    patch = out[:, 0, 64:96, 96:128].numpy()
    assert patch[0, 0, 0] == 144 and patch[0, -1, 0] == 175 and patch[1, 0, 0] == 208 and patch[1, 0, -1] == 239
    small = np.full((1, 112, 160, 3), 77, np.uint8)  # upscaled by 2 first; a flat frame stays flat
    assert torch.all(spatial_fragments(small) == 77)


def test_a_wrong_or_incomplete_checkpoint_is_refused_naming_keys_and_format(tmp_path):
    laion = {f"layers.{i}.{p}": torch.zeros(2) for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}
    torch.save(laion, tmp_path / "laion.pth")
    with pytest.raises(ValueError, match=r"not a fragment-VQA checkpoint.*fragments_backbone"):
        load_evaluator(str(tmp_path / "laion.pth"))
    sd = tiny_state()
    del sd["vqa_head.fc_last.bias"]
    sd["fragments_backbone.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"missing: vqa_head\.fc_last\.bias.*unexpected: fragments_backbone\.extra"):
        load_evaluator(str(tmp_path / "broken.pth"))
    sd = tiny_state()
    sd["fragments_backbone.layers.0.blocks.0.attn.relative_position_bias_table"] = torch.zeros(7, 1)
    torch.save({"state_dict": sd}, tmp_path / "window.pth")
    with pytest.raises(ValueError, match=r"window \(8, 7, 7\).*wrong shape.*relative_position_bias_table \(7, 1\) \(expected \(2535, 1\)\)"):
        load_evaluator(str(tmp_path / "window.pth"))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_evaluator(str(tmp_path / "absent.pth"))


def _block_by_pairs(block: SwinBlock, x: torch.Tensor, win, shift) -> torch.Tensor:
    """A block computed over ALL token pairs of the map, without partitioning or rolling anything: a token at
    p sits at r = (p - shift) mod size in the shifted frame; two tokens attend when their r fall in one window
    and, on every shifted axis, in one of the three bands the roll brings together (before the last w, the
    w - s wrapped ones, the last s); the bias is read from the tables by the delta of r; the gate is the
    fragment-index distance of p (fragments: the window's grid stretched over the map). Sizes: multiples of
    the window, so no padding."""
    _, d, h, w, c = x.shape
    size, win_t, shift_t = torch.tensor([d, h, w]), torch.tensor(win), torch.tensor(shift)
    pos = torch.stack(torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij"), -1)
    pos = pos.reshape(-1, 3)
    r = (pos - shift_t) % size
    band = torch.where(r < size - win_t, 0, torch.where(r < size - shift_t, 1, 2)) * (shift_t > 0)
    key = torch.cat([r // win_t, band], -1)
    same = (key[:, None] == key[None]).all(-1)
    delta = r[:, None] - r[None] + torch.tensor(block.attn.window) - 1
    sizes = [2 * k - 1 for k in block.attn.window]
    index = (delta[..., 0] * sizes[1] + delta[..., 1]) * sizes[2] + delta[..., 2]
    frag = torch.stack([pos[:, 1] * win[1] // h, pos[:, 2] * win[2] // w], -1)
    gate = (frag[:, None] - frag[None]).abs().sum(-1).float()[None]
    bias = block.attn.relative_position_bias_table[index].permute(2, 0, 1) * gate \
        + block.attn.fragment_position_bias_table[index].permute(2, 0, 1) * (1 - gate)
    heads = block.attn.heads
    y = F.layer_norm(x.reshape(-1, c), (c,), block.norm1.weight, block.norm1.bias)
    q, k, v = (y @ block.attn.qkv.weight.T + block.attn.qkv.bias).reshape(-1, 3, heads, c // heads).permute(1, 2, 0, 3)
    logits = (q * (c // heads) ** -0.5) @ k.transpose(-1, -2) + bias
    attn = logits.masked_fill(~same, float("-inf")).softmax(-1)
    out = (attn @ v).permute(1, 0, 2).reshape(-1, c) @ block.attn.proj.weight.T + block.attn.proj.bias
    x = x.reshape(-1, c) + out
    z = F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias) @ block.mlp.fc1.weight.T + block.mlp.fc1.bias
    x = x + (0.5 * z * (1 + torch.erf(z / math.sqrt(2)))) @ block.mlp.fc2.weight.T + block.mlp.fc2.bias
    return x.reshape(1, d, h, w, c)


@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 3, 3)])
def test_a_window_block_with_gated_fragment_biases_matches_an_all_pairs_computation(shift):
    torch.manual_seed(3)
    block = SwinBlock(8, 2, (8, 7, 7), shift, 4.0, True)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        x = torch.randn(1, 4, 14, 14, 8)  # 2 x 2 x 2 windows of (2, 7, 7); fragments of 2 x 2 tokens
        got = block(x, (2, 7, 7))
        want = _block_by_pairs(block, x, (2, 7, 7), shift)
    assert torch.allclose(got, want, atol=1e-5)
