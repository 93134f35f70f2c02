"""One diffusion-forcing pass of the diffusers SkyReels-V2 DiT that computes only what a row's outputs need.

The weights and layers are those of `SkyReelsV2Transformer3DModel`; this is its forward restated for the
sampler's rows, so work whose result is known, or never read, is left out. Every shortcut is exact (the
same operations on the same values; float rounding apart where a batch shape changes):

- the text conditioning of cross-attention (text embedder, then each layer's keys/values) depends only on
  the prompts: computed once per window (`text_state`), not once per row and guidance pass;
- the conditional and unconditional branches of classifier-free guidance see the same latents and
  timesteps and differ only from the first cross-attention on: patch embedding, timestep/fps modulation and
  the first layer's self-attention run once for both (Wan2.1 block order: self-attn, cross-attn, FFN);
- modulation stays per latent frame (diffusion forcing gives one timestep per frame) and broadcasts over
  the frame's tokens instead of being repeated token by token;
- block-causal self-attention (report section 3.4.2) runs block by block without a dense mask and, when the
  sampler allows it, over cached keys/values of finished frames (`models.df_attention.FrameLayout`);
- the last layer feeds nothing but the output head, and the sampler reads only the frames it updates this
  row: there the other frames (clean or re-noised history, finished blocks) give keys and values only, and
  their queries, cross-attention, FFN and output head are skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.df_attention import FrameLayout, rotate


def supports(dit) -> bool:
    """Whether `dit` is a plain text-to-video SkyReels-V2 DiT this pass reproduces (no image context, no fused
    projections); anything else runs through the diffusers forward."""
    blocks = list(dit.blocks)
    return (dit.condition_embedder.image_embedder is None and bool(blocks)
            and all(b.attn2.add_k_proj is None and not getattr(b.attn1, "fused_projections", False)
                    and not getattr(b.attn2, "fused_projections", False) for b in blocks))


@torch.no_grad()
def text_state(dit, text: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cross-attention keys/values of every layer, (B, heads, tokens, head dim), for text states `text`
    (B, tokens, text dim): what each DiT call would otherwise recompute from the same prompts."""
    encoded = dit.condition_embedder.text_embedder(text)
    state = []
    for block in dit.blocks:
        attn = block.attn2
        key = attn.norm_k(attn.to_k(encoded)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        value = attn.to_v(encoded).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        state.append((key, value))
    return state


def _attend(query, key, value, q_first: int, ends: list[int] | None, tpf: int) -> torch.Tensor:
    """Attention of queries of frames [q_first, ...) over keys from frame 0, block-causal when `ends` (the
    causal blocks' end frames) is given: a query of a block sees the keys up to that block's end."""
    if ends is None:
        return F.scaled_dot_product_attention(query, key, value)
    q_last = q_first + query.shape[2] // tpf
    start, parts = q_first, []
    for end in ends:
        if end <= start:
            continue
        stop = min(end, q_last)
        parts.append(F.scaled_dot_product_attention(query[:, :, (start - q_first) * tpf:(stop - q_first) * tpf],
                                                    key[:, :, :end * tpf], value[:, :, :end * tpf]))
        start = stop
        if start >= q_last:
            break
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def _modulate(norm, h, shift, scale, frames: int):
    """`norm(h) * (1 + scale) + shift` with one (shift, scale) per latent frame, broadcast over its tokens."""
    b, n, d = h.shape
    out = norm(h.float()).view(b, frames, n // frames, d) * (1 + scale[:, :, None]) + shift[:, :, None]
    return out.view(b, n, d)


def _gated(h, x, gate, frames: int):
    b, n, d = h.shape
    return (h.float().view(b, frames, -1, d) + x.view(x.shape[0], frames, -1, d) * gate[:, :, None]).view(b, n, d)


def _self_attention(block, layer: int, norm_h, rope, layout: FrameLayout, q_frames: tuple[int, int],
                    in_first: int) -> torch.Tensor:
    """attn1 of `block` for the queries of frames `q_frames` (window frames); `norm_h` holds the frames from
    `in_first` on, whose keys/values join the cached ones."""
    attn, tpf = block.attn1, layout.tokens_per_frame
    cos, sin = rope
    key = rotate(attn.norm_k(attn.to_k(norm_h)).unflatten(2, (attn.heads, -1)), cos, sin).transpose(1, 2)
    value = attn.to_v(norm_h).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    q_lo, q_hi = (q_frames[0] - in_first) * tpf, (q_frames[1] - in_first) * tpf
    q_in = norm_h if q_lo == 0 and q_hi == norm_h.shape[1] else norm_h[:, q_lo:q_hi]
    query = rotate(attn.norm_q(attn.to_q(q_in)).unflatten(2, (attn.heads, -1)), cos[:, q_lo:q_hi],
                   sin[:, q_lo:q_hi]).transpose(1, 2)
    if layout.kv is not None:
        slot = (layout.pass_name, layer)
        if slot in layout.kv:
            cached_key, cached_value = layout.kv[slot]
            key, value = torch.cat([cached_key, key], dim=2), torch.cat([cached_value, value], dim=2)
        if layout.store_until > layout.cached_frames:
            stored = layout.store_until * tpf  # copies: the cache must not pin this row's whole tensors
            layout.kv[slot] = (key[:, :, :stored].clone(), value[:, :, :stored].clone())
    elif in_first:
        raise RuntimeError("an input starting after frame 0 needs the KV cache of the frames before it")
    out = _attend(query, key, value, q_frames[0], layout.block_ends, tpf)
    out = out.transpose(1, 2).flatten(2, 3).type_as(query)
    return attn.to_out[1](attn.to_out[0](out))


def _cross_attention(block, norm_h, text_kv) -> torch.Tensor:
    attn = block.attn2
    query = attn.norm_q(attn.to_q(norm_h)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    key, value = text_kv
    out = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).flatten(2, 3).type_as(query)
    return attn.to_out[1](attn.to_out[0](out))


@torch.no_grad()
def velocity(dit, x: torch.Tensor, timestep: torch.Tensor, text_kv: list, fps_id: int, layout: FrameLayout,
             out_frames: tuple[int, int]) -> torch.Tensor:
    """The DiT's prediction for window frames `out_frames`, (B, C, frames, H, W) with B the batch of `text_kv`
    (cond, or cond and uncond); `x` (1, C, f, H, W) and `timestep` (1, f) cover window frames from
    `layout.cached_frames` on, up to the last frame the pass must see."""
    first = layout.cached_frames
    frames = x.shape[2]
    p_t, p_h, p_w = dit.config.patch_size
    if p_t != 1:
        raise ValueError("the diffusion-forcing pass needs one latent frame per temporal patch (patch_size[0]=1)")
    batch = text_kv[0][0].shape[0]
    pph, ppw = x.shape[3] // p_h, x.shape[4] // p_w

    # Shared by every guidance branch: RoPE, patch embedding, per-frame timestep and fps modulation.
    rope = dit.rope(torch.empty((1, x.shape[1], first + frames, x.shape[3], x.shape[4]), device="meta")) \
        if first else dit.rope(x)
    if first:
        rope = tuple(r[:, first * layout.tokens_per_frame:] for r in rope)
    h = dit.patch_embedding(x).flatten(2).transpose(1, 2)  # (1, tokens, dim)
    emb = dit.condition_embedder
    t_freq = emb.timesteps_proj(timestep)
    t_freq = t_freq.to(next(emb.time_embedder.parameters()).dtype)
    temb = emb.time_embedder(t_freq).type_as(h)  # (1, f, dim)
    proj = emb.time_proj(emb.act_fn(temb)).unflatten(-1, (6, -1))  # (1, f, 6, dim)
    if dit.config.inject_sample_info:
        fps = torch.tensor([fps_id], dtype=torch.long, device=h.device)
        proj = proj + dit.fps_projection(dit.fps_embedding(fps)).unflatten(1, (6, -1))[:, None]
    proj = proj.transpose(1, 2)  # (1, 6, f, dim)

    lo, hi = out_frames
    blocks = list(dit.blocks)
    for layer, block in enumerate(blocks):
        mod = (block.scale_shift_table.unsqueeze(2) + proj.float()).unbind(1)  # 6 x (1, f, dim)
        shift, scale, gate, c_shift, c_scale, c_gate = mod
        last = layer == len(blocks) - 1
        q_frames = (lo, hi) if last else (first, first + frames)
        norm_h = _modulate(block.norm1, h, shift, scale, frames).type_as(h)
        attn_out = _self_attention(block, layer, norm_h, rope, layout, q_frames, first)
        if last and (lo, hi) != (first, first + frames):  # only the output frames go on
            h = h[:, (lo - first) * layout.tokens_per_frame:(hi - first) * layout.tokens_per_frame]
            c_shift, c_scale, c_gate, gate = (m[:, lo - first:hi - first] for m in (c_shift, c_scale, c_gate, gate))
            frames, first, temb = hi - lo, lo, temb[:, lo - first:hi - first]
        h = _gated(h, attn_out, gate, frames).type_as(h)
        if h.shape[0] != batch:  # the branches part at the first cross-attention
            h = h.expand(batch, -1, -1)
        h = h + _cross_attention(block, block.norm2(h.float()).type_as(h), text_kv[layer])
        norm_h = _modulate(block.norm3, h, c_shift, c_scale, frames).type_as(h)
        h = _gated(h, block.ffn(norm_h).float(), c_gate, frames).type_as(h)

    shift, scale = (dit.scale_shift_table.unsqueeze(2) + temb.unsqueeze(1)).unbind(1)  # (1, f, dim) each
    h = dit.proj_out(_modulate(dit.norm_out, h, shift, scale, frames).type_as(h))
    h = h.reshape(batch, frames, pph, ppw, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return h.flatten(6, 7).flatten(4, 5).flatten(2, 3)
