"""Ulysses sequence parallelism for diffusers' ``SkyReelsV2Transformer3DModel`` via ``deepspeed.sequence``.

The P ranks of a sequence-parallel group hold the same sample. The DiT's token sequence is cut into
P contiguous shards at the first block's input and re-assembled after the last block; in between every
per-token op (norms, modulation, FFN, cross-attention to the full text) runs on the local shard only,
and each self-attention goes through ``DistributedAttention``: an all-to-all trades the sequence shard
for a head shard, attention runs over the whole sequence with H/P heads, and a second all-to-all trades
back. Nothing of the model is forked: forward hooks shard the block inputs (hidden states, per-token
modulation, RoPE tables) and an attention processor replaces self-attention.

Gradients: every rank of the group computes the same loss from the gathered output, and DeepSpeed
averages gradients over all ranks (the SP group included), so the gather's backward hands each rank P
times its slice of the output gradient; the group's average is then the exact gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def sequence_parallel_group(degree: int) -> dist.ProcessGroup:
    """Consecutive ranks form a group ([0..P-1], [P..2P-1], ...); every rank must call this (new_group)."""
    world = dist.get_world_size()
    if world % degree:
        raise ValueError(f"sequence_parallel={degree} must divide the number of workers ({world})")
    mine = None
    for start in range(0, world, degree):
        group = dist.new_group(list(range(start, start + degree)))
        if start <= dist.get_rank() < start + degree:
            mine = group
    return mine


def _apply_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (RoFormer, Su et al. 2021, Eq. 34) on interleaved pairs (x_2i, x_2i+1), each
    rotated by its angle; the SkyReels-V2 RoPE tables hold every cos / sin value twice along the last dim."""
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., ::2], freqs_sin[..., 1::2]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


def _local_attention(query, key, value, attn_mask=None):
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    return dispatch_attention_fn(query, key, value, attn_mask=attn_mask, dropout_p=0.0, is_causal=False)


class UlyssesAttnProcessor:
    """Self-attention of a SkyReels-V2 block over a sequence shard (attn1 only: it has no image K/V)."""

    def __init__(self, group: dist.ProcessGroup):
        from deepspeed.sequence.layer import DistributedAttention

        # Layout [batch, seq, heads, head_dim]: scatter heads (2), gather the sequence (1).
        self.attention = DistributedAttention(_local_attention, group, scatter_idx=2, gather_idx=1)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.transformers.transformer_skyreels_v2 import _get_qkv_projections

        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query, key = attn.norm_q(query), attn.norm_k(key)  # RMS norm across heads: per token, shard-safe
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        if rotary_emb is not None:
            query, key = _apply_rotary(query, *rotary_emb), _apply_rotary(key, *rotary_emb)
        out = self.attention(query, key, value, 0, None, attention_mask).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class _GatherSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, local.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        size, rank = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        return grad.chunk(size, dim=1)[rank] * size, None  # see the module doc: averaged over the group


def _shard(x: torch.Tensor, dim: int, group: dist.ProcessGroup) -> torch.Tensor:
    size = dist.get_world_size(group)
    if x.shape[dim] % size:
        raise ValueError(f"{x.shape[dim]} tokens do not split over sequence_parallel={size}; pick latent "
                         "sizes whose token count (frames x h/2 x w/2) is a multiple of it")
    return x.chunk(size, dim=dim)[dist.get_rank(group)]


def apply_ulysses(model: nn.Module, degree: int) -> dist.ProcessGroup:
    """Make ``model`` (a SkyReelsV2Transformer3DModel) run sequence-parallel over groups of ``degree`` ranks."""
    group = sequence_parallel_group(degree)
    blocks = model.blocks

    def shard_inputs(block, args):
        # The model calls block(hidden_states, encoder_hidden_states, temb, rotary_emb, attention_mask).
        hidden, text, temb, rotary, mask = args
        if block is blocks[0]:
            hidden = _shard(hidden, 1, group)
        if temb.dim() == 4:  # per-token modulation (per-frame timesteps): [B, 6, S, D]
            temb = _shard(temb, 2, group)
        if rotary is not None:
            rotary = tuple(_shard(t, 1, group) for t in rotary)  # [1, S, 1, head_dim] each
        return hidden, text, temb, rotary, mask  # the mask stays [.., S, S]: attention sees the full sequence

    for block in blocks:
        block.attn1.set_processor(UlyssesAttnProcessor(group))
        block.register_forward_pre_hook(shard_inputs)
    blocks[-1].register_forward_hook(lambda block, args, out: _GatherSequence.apply(out, group))
    return group
