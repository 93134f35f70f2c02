"""Block-causal self-attention for the diffusers SkyReels-V2 DiT, without a dense L x L mask.

Diffusion forcing with causal blocks (report section 3.4.2: "causal attention ... caching the K, V of
history frames") lets a token of block i attend to every token of blocks 0..i. diffusers builds that as
a boolean (L, L) mask, quadratic in the sequence length, and cannot express a shorter last block
(huggingface/diffusers issue 13609). Here the same attention is computed block by block: the queries
of block i attend to the key prefix that ends with block i, which needs no mask at all.

The processor plugs into `SkyReelsV2Attention.set_processor`; the DiT itself is the diffusers class.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_skyreels_v2 import _get_qkv_projections


@dataclass
class FrameLayout:
    """What the next forward pass holds: tokens per latent frame and where causal blocks end (frames).

    `block_ends` None means full bidirectional attention (the reference's behaviour for block size 1).
    KV cache (report section 3.4.2: cache the K, V of history frames): when `kv` is a dict, the input
    starts at frame `cached_frames`, whose earlier frames' keys/values per (pass, layer) are in `kv`;
    frames up to `store_until` are final (whole finished blocks) and their keys/values are appended.
    """

    tokens_per_frame: int = 1
    block_ends: list[int] | None = None
    kv: dict | None = None
    pass_name: str = "cond"
    cached_frames: int = 0
    store_until: int = 0


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # RoPE on interleaved (even, odd) channel pairs, as Wan2.1 applies it; cos/sin repeat each frequency.
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).type_as(x)


class BlockCausalAttnProcessor:
    """Self-attention (attn1) of a SkyReels-V2 block under the block layout of a shared `FrameLayout`."""

    def __init__(self, layout: FrameLayout, layer: int = 0):
        self.layout, self.layer = layout, layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if attention_mask is not None:
            raise ValueError("block-causal attention builds no mask; set transformer num_frame_per_block to 1")
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        if rotary_emb is not None:
            query, key = rotate(query, *rotary_emb), rotate(key, *rotary_emb)
        query, key, value = (x.transpose(1, 2) for x in (query, key, value))  # (B, heads, L, D)

        lay = self.layout
        ends, tpf = lay.block_ends, lay.tokens_per_frame
        if lay.kv is not None:
            slot = (lay.pass_name, self.layer)
            if slot in lay.kv:
                cached_key, cached_value = lay.kv[slot]
                key, value = torch.cat([cached_key, key], dim=2), torch.cat([cached_value, value], dim=2)
            if lay.store_until > lay.cached_frames:
                # Copies, so the cache does not pin this row's whole key/value tensors.
                stored = lay.store_until * tpf
                lay.kv[slot] = (key[:, :, :stored].clone(), value[:, :, :stored].clone())
        if ends is None:
            out = F.scaled_dot_product_attention(query, key, value)
        else:
            # Queries of frames from `offset` on; keys from frame 0 (cached part first).
            offset = key.shape[2] - query.shape[2]
            start, parts = offset, []
            for end in ends:
                k_end = end * tpf
                if k_end <= offset:
                    continue
                parts.append(F.scaled_dot_product_attention(query[:, :, start - offset:k_end - offset],
                                                            key[:, :, :k_end], value[:, :, :k_end]))
                start = k_end
            out = torch.cat(parts, dim=2)
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class OffsetRotaryEmbed(torch.nn.Module):
    """The DiT's own RoPE, for an input that starts at latent frame `layout.cached_frames` (KV cache)."""

    def __init__(self, rope: torch.nn.Module, layout: FrameLayout):
        super().__init__()
        self.rope, self.layout = rope, layout

    def forward(self, hidden_states: torch.Tensor):
        b, c, f, h, w = hidden_states.shape
        skip = self.layout.cached_frames
        if not skip:
            return self.rope(hidden_states)
        # The diffusers RoPE reads only the input's shape: ask it for the whole window, keep our frames.
        cos, sin = self.rope(torch.empty((b, c, skip + f, h, w), device="meta"))
        first = skip * self.layout.tokens_per_frame
        return cos[:, first:], sin[:, first:]


@contextmanager
def block_causal_attention(transformer, layout: FrameLayout):
    """Route every attn1 of `transformer` through `BlockCausalAttnProcessor` for the duration, and its RoPE
    through `OffsetRotaryEmbed`.

    The DiT's own mask switch (`num_frame_per_block`, which the reference pipeline overwrites in the
    config on every call) is held at 1 so it builds no dense mask; everything is restored on exit.
    """
    saved_block = transformer.config.num_frame_per_block
    saved = [blk.attn1.processor for blk in transformer.blocks]
    rope = transformer.rope
    transformer.register_to_config(num_frame_per_block=1)
    for layer, blk in enumerate(transformer.blocks):
        blk.attn1.set_processor(BlockCausalAttnProcessor(layout, layer))
    transformer.rope = OffsetRotaryEmbed(rope, layout)
    try:
        yield
    finally:
        transformer.rope = rope
        for blk, proc in zip(transformer.blocks, saved, strict=True):
            blk.attn1.set_processor(proc)
        transformer.register_to_config(num_frame_per_block=saved_block)
