"""DiT FLOPs of a generation, counted with `torch.utils.flop_counter.FlopCounterMode`, and the DiT's time.

Only the DiT's calls are counted (the diffusers `SkyReelsV2Transformer3DModel.forward`, and reelflow's
row-pruned pass `models.df_dit.velocity`), so the text encoder, the solver and the VAE stay out of the
account. The counter knows matmuls, convolutions and the fused attention kernels of CUDA; PyTorch's CPU
attention kernel (`_scaled_dot_product_flash_attention_for_cpu`) has no formula in it and would count as
zero, so it gets the same one as the other fused kernels: 2 * B * heads * Lq * Lk * (d_qk + d_v). A masked
call counts the whole Lq x Lk product, which is what the kernel computes.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from models import df_dit


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_formulas() -> dict:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if op is None else {op: _cpu_sdpa_flops}


@dataclass
class DiTFlops:
    """FLOPs of every DiT call made while counting, in total and per aten op."""

    total: int = 0
    calls: int = 0
    by_op: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"dit_flops": self.total, "dit_calls": self.calls, "dit_flops_by_op": dict(self.by_op)}


@contextmanager
def _wrapped_dit_calls(transformer, wrap):
    """Route every DiT call (the transformer's forward, and the row-pruned pass) through `wrap(fn)`."""
    velocity, own = df_dit.velocity, transformer.__dict__.get("forward")  # an instance-level forward (hooks)
    depth = [0]

    def outer(fn):
        inner = wrap(fn)

        def call(*args, **kwargs):
            if depth[0]:  # a DiT call inside a wrapped one is already accounted for
                return fn(*args, **kwargs)
            depth[0] += 1
            try:
                return inner(*args, **kwargs)
            finally:
                depth[0] -= 1
        return call

    transformer.forward, df_dit.velocity = outer(transformer.forward), outer(velocity)
    try:
        yield
    finally:
        if own is None:
            del transformer.forward
        else:
            transformer.forward = own
        df_dit.velocity = velocity


@contextmanager
def count_dit_flops(transformer):
    """Count the FLOPs of every DiT call for the duration; yields the `DiTFlops` being filled."""
    counts, formulas = DiTFlops(), _custom_formulas()

    def wrap(fn):
        def call(*args, **kwargs):
            with FlopCounterMode(display=False, custom_mapping=formulas) as mode:
                out = fn(*args, **kwargs)
            counts.total += mode.get_total_flops()
            counts.calls += 1
            for op, n in mode.get_flop_counts().get("Global", {}).items():
                counts.by_op[str(op)] = counts.by_op.get(str(op), 0) + int(n)
            return out
        return call

    with _wrapped_dit_calls(transformer, wrap):
        yield counts


@contextmanager
def time_dit_calls(transformer):
    """Add the process time of every DiT call to the yielded list's only item, for the duration."""
    total = [0.0]

    def wrap(fn):
        def call(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                total[0] += time.process_time() - start
        return call

    with _wrapped_dit_calls(transformer, wrap):
        yield total
