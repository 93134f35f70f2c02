"""TeaCache for the diffusion-forcing sampler: skip the DiT's block stack on steps whose input barely moved.

After Liu et al. 2024, "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model"
(arXiv 2411.19108). At every denoising step the timestep-modulated input of the first transformer block
(`norm1(x) * (1 + scale) + shift`, cheap: one layer norm) is compared with the previous step's; the
relative L1 changes are summed (optionally through a rescaling polynomial, identity by default: the paper
fits one per model, none is fitted here) since the last step that ran the blocks. While that sum stays below
`threshold` the blocks are skipped and the residual they added at the last computed step (output minus
input of the whole stack) is added to the new input instead; otherwise the blocks run, the residual is
stored and the sum restarts at zero. The approximation is lossy by design: threshold 0 runs every step.

Diffusion forcing (this repository's own adaptation, not in the paper):
- state is per window and per guidance pass (`FrameLayout.pass_name`: cond, uncond or the batched pair),
  so each pass reuses only its own residual;
- frames carry their own timesteps, so the change is the mean of per-frame relative L1 changes over the
  frames the sampler steps at this row (the outputs of the other frames are discarded);
- a row always runs the blocks when any frame it steps takes one of its first `retention_steps` steps or its
  last step, when the KV cache must store newly finished blocks' keys/values (a skipped pass stores none),
  or when its input covers frames the cached residual does not (a block that just started).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class _Slot:
    """One guidance pass's state inside a window; ranges are [start, end) latent frames of the window."""

    previous: torch.Tensor  # modulated input of the last step, computed or not: (B, tokens, dim) float32
    previous_range: tuple[int, int]
    residual: torch.Tensor  # block-stack output minus input at the last computed step
    residual_range: tuple[int, int]
    accumulated: float = 0.0


class TeaCache:
    """Skip-or-compute decisions and cached residuals; counts computed and skipped block-stack passes."""

    def __init__(self, threshold: float, retention_steps: int = 1, coefficients: list[float] | None = None):
        if threshold < 0 or retention_steps < 0:
            raise ValueError("teacache threshold and retention steps must be >= 0")
        self.threshold, self.retention_steps = float(threshold), int(retention_steps)
        self.coefficients = None if coefficients is None else list(coefficients)  # np.polyval order
        self.computed = self.skipped = 0
        self.slots: dict[str, _Slot] = {}
        self._row: tuple[int, int, torch.Tensor, bool] | None = None

    @property
    def stats(self) -> dict:
        total = self.computed + self.skipped
        return {"teacache_computed": self.computed, "teacache_skipped": self.skipped,
                "teacache_skip_fraction": self.skipped / total if total else 0.0}

    def new_window(self) -> None:
        """Forget every cached residual: a new window starts from fresh noise."""
        self.slots, self._row = {}, None

    def begin_row(self, start: int, end: int, updated: np.ndarray, step_index: np.ndarray, num_steps: int,
                  force: bool = False) -> None:
        """The next pass(es) cover frames [start, end) of the window; `updated` and `step_index` are this row's
        update mask and 1-based step numbers for those frames. `force` runs the blocks regardless."""
        steps = step_index[updated]
        force = force or bool(((steps <= self.retention_steps) | (steps >= num_steps)).any())
        frames = torch.from_numpy(np.ascontiguousarray(updated))
        self._row = (start, end, frames, force)

    def _rescale(self, change: float) -> float:
        return change if self.coefficients is None else float(np.polyval(self.coefficients, change))

    def forward(self, blocks, pass_name: str, tokens_per_frame: int, hidden_states, *block_args):
        """The block stack's output for `hidden_states`: computed, or the input plus the cached residual."""
        start, end, frames, force = self._row if self._row is not None else (0, 0, None, True)
        modulated = _modulated_input(blocks[0], hidden_states, block_args[1])
        slot = self.slots.get(pass_name)
        skip = False
        if slot is not None and frames is not None:
            covered = all(lo <= start and end <= hi for lo, hi in (slot.previous_range, slot.residual_range))
            if covered and slot.previous.shape[0] == modulated.shape[0]:
                previous = _frames(slot.previous, slot.previous_range[0], start, end, tokens_per_frame)
                change = _per_frame_change(modulated, previous, tokens_per_frame)[frames.to(modulated.device)]
                slot.accumulated += self._rescale(float(change.mean()) if change.numel() else 0.0)
                skip = not force and slot.accumulated < self.threshold
        if skip:
            residual = _frames(slot.residual, slot.residual_range[0], start, end, tokens_per_frame)
            out = (hidden_states.float() + residual).type_as(hidden_states)
            slot.previous, slot.previous_range = modulated, (start, end)
            self.skipped += 1
            return out
        out = hidden_states
        for block in blocks:
            out = block(out, *block_args)
        residual = out.float() - hidden_states.float()
        self.slots[pass_name] = _Slot(modulated, (start, end), residual, (start, end), 0.0)
        self.computed += 1
        return out


def _modulated_input(block, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    """What the first block's self-attention sees: its layer norm, scaled and shifted by the timestep."""
    table = block.scale_shift_table.float()
    if temb.dim() == 4:  # diffusion forcing: (B, 6, tokens, dim), one modulation per token
        mod = table.unsqueeze(2) + temb.float()
        shift, scale = mod[:, 0], mod[:, 1]
    else:  # (B, 6, dim)
        mod = table + temb.float()
        shift, scale = mod[:, 0:1], mod[:, 1:2]
    return block.norm1(hidden_states.float()) * (1 + scale) + shift


def _frames(x: torch.Tensor, first: int, start: int, end: int, tokens_per_frame: int) -> torch.Tensor:
    """Tokens of frames [start, end) from `x`, which holds frames from `first` on (frame-major tokens)."""
    return x[:, (start - first) * tokens_per_frame:(end - first) * tokens_per_frame]


def _per_frame_change(current: torch.Tensor, previous: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Relative L1 change of each frame (summed over the batch, its tokens and channels)."""
    diff = (current - previous).abs().unflatten(1, (-1, tokens_per_frame)).sum(dim=(0, 2, 3))
    base = previous.abs().unflatten(1, (-1, tokens_per_frame)).sum(dim=(0, 2, 3))
    return diff / base.clamp_min(1e-12)


class _CachedBlockStack(torch.nn.Module):
    """Stands in for `transformer.blocks`: the DiT's loop over it finds one callable, the whole stack under
    TeaCache; indexing and len still reach the real blocks."""

    def __init__(self, blocks: torch.nn.ModuleList, cache: TeaCache, layout):
        super().__init__()
        self.inner, self.cache, self.layout = blocks, cache, layout

    def __iter__(self):
        return iter([self._stack])

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        return self.inner[index]

    def _stack(self, hidden_states, *block_args):
        return self.cache.forward(self.inner, self.layout.pass_name, self.layout.tokens_per_frame, hidden_states,
                                  *block_args)


@contextmanager
def teacache_blocks(transformer, cache: TeaCache, layout):
    """Route the DiT's block loop through `cache` for the duration; `layout` names the pass and frame size."""
    blocks = transformer.blocks
    transformer.blocks = _CachedBlockStack(blocks, cache, layout)
    try:
        yield cache
    finally:
        transformer.blocks = blocks
