"""Frame-oriented Probability Propagation (FoPP): per-frame timesteps for Diffusion Forcing training.

Report section 3.4.2. Diffusion forcing gives every latent frame its own noise level; the report restricts
training to NON-DECREASING schedules (a later frame is never less noisy than an earlier one), the same
shape the AD inference schedule (`models.ad_schedule`) produces row by row. FoPP draws one anchor frame f
and one anchor timestep t uniformly, then fills the other frames so that, given the anchor, every valid
non-decreasing completion is equally likely: dynamic programming counts the completions, and each next
frame takes a value in proportion to the number of completions passing through it.

Convention (the diffusers one, as `ad_schedule.ADSchedule.timesteps` returns): a timestep is an index
0..T-1 (the report counts 1..T), 0 = clean and T-1 = pure noise, so a schedule s satisfies s[0] <= s[1] <= ... <= s[F-1].
To turn indices into flow-matching times (report Eq. 1, x_t = t x1 + (1 - t) x0 with t = 1 on data) a
trainer uses t = 1 - s / T, or its scheduler's sigma table indexed by s.

The DP table. d[k][v] = number of non-decreasing sequences of k frames with values in [v, T-1]
(the ways to fill the k frames after a frame at value v, allowing that next frame to repeat v). It obeys the
report's recurrence d[k][v] = d[k][v+1] + d[k-1][v] (the first of the k frames is v, or all exceed v) with
boundaries d[0][v] = 1 and d[k][T] = 0, i.e. d[k] is the reversed cumulative sum of d[k-1]. Counts reach ~1e48 for F = 25, T = 1000 and overflow float64 for longer clips, so the
table is kept in log space (log-sum-exp accumulation). Frames before the anchor are the mirror image:
reflecting values v -> T-1-v turns "non-increasing going backwards, within [0, t]" into the same table.

Sampling the next frame given the previous value v with k frames left (this one included) needs
P(u | v) = d[k-1][u] / d[k][v] for u >= v, whose upper tail telescopes to
P(next > u | v) = d[k][u+1] / d[k][v]. So an inverse-CDF draw is one `searchsorted` of
log R + log d[k][v] (R uniform in (0, 1]) into the row log d[k]: no loop over T. The
row depends only on the frame position, not on the anchor, so a batch is filled frame by frame with F - 1
vectorised searches (numpy: a few microseconds each).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch


@functools.lru_cache(maxsize=16)
def log_completion_table(max_frames: int, num_steps: int) -> np.ndarray:
    """(max_frames + 1, num_steps + 1) float64: log d[k][v] for k in 0..max_frames, v in 0..T
    (column T, a value beyond the last timestep, has no completions: -inf). Cached per shape: the
    sampler builds it once per (F, T). Treat it as read-only."""
    if max_frames < 0 or num_steps < 1:
        raise ValueError(f"need max_frames >= 0 and num_steps >= 1, got {max_frames}, {num_steps}")
    table = np.full((max_frames + 1, num_steps + 1), -np.inf)
    table[0, :num_steps] = 0.0  # d[0][v] = 1: nothing left to fill
    for k in range(1, max_frames + 1):
        # d[k][v] = sum_{u >= v} d[k-1][u]: the report's recurrence unrolled along v, in log space
        table[k, :num_steps] = np.logaddexp.accumulate(table[k - 1, num_steps - 1::-1])[::-1]
    table.flags.writeable = False
    return table


def count_completions(num_frames: int, num_steps: int, anchor_frame: int, anchor_step: int) -> float:
    """Number of non-decreasing schedules of `num_frames` frames over `num_steps` timesteps with frame
    `anchor_frame` at `anchor_step`, from the DP table (float64 via log space, so equal to the integer
    count up to rounding; `log_count_completions` for counts beyond float range)."""
    return math.exp(log_count_completions(num_frames, num_steps, anchor_frame, anchor_step))


def log_count_completions(num_frames: int, num_steps: int, anchor_frame: int, anchor_step: int) -> float:
    """log of `count_completions`: the frames after the anchor and those before it are filled
    independently, so the count is (completions after) x (completions before, mirrored)."""
    if not (0 <= anchor_frame < num_frames and 0 <= anchor_step < num_steps):
        raise ValueError(f"anchor ({anchor_frame}, {anchor_step}) outside {num_frames} frames x {num_steps} steps")
    table = log_completion_table(num_frames - 1, num_steps)
    after = table[num_frames - 1 - anchor_frame, anchor_step]
    before = table[anchor_frame, num_steps - 1 - anchor_step]
    return float(after + before)


def sample_fopp(batch: int, num_frames: int, num_steps: int, generator: torch.Generator | None = None,
                anchor_frame: torch.Tensor | None = None, anchor_step: torch.Tensor | None = None) -> torch.Tensor:
    """FoPP schedules: LongTensor (batch, num_frames), non-decreasing along frames, values in [0, num_steps).

    Anchors are drawn uniformly (frame in [0, F), timestep in [0, T)) unless given (shape (batch,), for
    tests and ablations); given its anchor, each schedule is uniform over the valid completions.

    Frames before the anchor are the frames after the anchor of the mirrored schedule
    m[j] = T-1 - s[F-1-j] (non-decreasing as well, anchored at frame F-1-f, value T-1-t), so one forward
    pass over 2 x batch chains fills both sides, and every chain reads the same DP row at frame i."""
    if batch < 1 or num_frames < 1 or num_steps < 1:
        raise ValueError(f"batch, num_frames, num_steps must be >= 1, got {batch}, {num_frames}, {num_steps}")
    if anchor_frame is None:
        anchor_frame = torch.randint(0, num_frames, (batch,), generator=generator)
    if anchor_step is None:
        anchor_step = torch.randint(0, num_steps, (batch,), generator=generator)
    anchor_frame, anchor_step = anchor_frame.long().cpu().numpy(), anchor_step.long().cpu().numpy()
    if ((anchor_frame < 0) | (anchor_frame >= num_frames) | (anchor_step < 0) | (anchor_step >= num_steps)).any():
        raise ValueError("anchors must lie in [0, num_frames) x [0, num_steps)")
    last, frames = num_steps - 1, np.arange(num_frames)
    log_table, search_rows = _tables(num_frames, num_steps)
    start_frame = np.concatenate([anchor_frame, num_frames - 1 - anchor_frame])  # (2B,): direct, mirrored
    # -log R with R uniform in (0, 1]; R = 1 (here 0) at and before a chain's anchor, where the draw below
    # then returns exactly the previous value, which keeps the anchor without a mask in the loop
    neg_log_uniform = -np.log1p(-torch.rand((num_frames, 2 * batch), generator=generator, dtype=torch.float64).numpy())
    neg_log_uniform[frames[:, None] <= start_frame[None, :]] = 0.0
    chains = np.empty((num_frames, 2 * batch), dtype=np.int64)  # frame-major: each step writes one row
    chains[0] = np.concatenate([anchor_step, last - anchor_step])
    for i in range(1, num_frames):  # frame i leaves k = F - i frames to fill, itself included
        k = num_frames - i
        # the largest u whose tail d[k][u] >= R d[k][prev], i.e. -log d[k][u] <= -log d[k][prev] - log R
        chains[i] = np.searchsorted(search_rows[k], neg_log_uniform[i] - log_table[k, chains[i - 1]], side="right")
    direct, mirrored = chains[:, :batch].T, last - chains[::-1, batch:].T
    schedule = np.where(frames[None, :] >= anchor_frame[:, None], direct, mirrored)
    return torch.from_numpy(schedule)


@functools.lru_cache(maxsize=16)
def _tables(num_frames: int, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The DP table for F frames, and its rows negated (ascending, as `searchsorted` needs) without column
    0: a search counting the entries <= x then returns the index u itself (column 0, the smallest, always
    qualifies since x >= -log d[k][prev] >= -log d[k][0])."""
    log_table = log_completion_table(num_frames - 1, num_steps)
    return log_table, np.ascontiguousarray(-log_table[:, 1:])
