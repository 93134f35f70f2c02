"""The asynchronous diffusion-forcing (AD) inference schedule, planned without torch.

Report section 3.4.2 (diffusion forcing, "Adaptive Difference" inference) and section 5.4 (long video):
frames are grouped into causal blocks of `block_size` latent frames; every block walks the same
`num_steps` denoising steps, and block j starts `ar_step` rows after block j-1 (ar_step 0 = synchronous,
every frame steps together). Within a row, earlier frames are never noisier than later ones (the
non-decreasing noise constraint of the FoPP schedule). Clean prefix frames (history of a long video,
an image to continue) are conditions and are never updated.

Indexing follows the convention of the diffusers SkyReels-V2 pipelines so the two stay comparable:
`step_index` 0 = not started (the model sees pure noise, timestep `NOT_STARTED_TIMESTEP`),
k in 1..num_steps = this row applies the k-th step, num_steps + 1 = finished (timestep 0).

Two differences from diffusers' `generate_timestep_matrix`, by design:
- a frame count that is not a multiple of `block_size` gets a shorter last block; diffusers floors
  the block count and leaves the tail frames as noise (huggingface/diffusers issue 13609);
- the schedule is computed in closed form: block j (counting from the first non-clean block) starts at
  row j * min(ar_step, num_steps) - a lag above num_steps cannot wait longer than the previous block takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Timestep the reference feeds for frames that have not started yet (pure noise).
NOT_STARTED_TIMESTEP = 999


@dataclass(frozen=True)
class ADSchedule:
    num_steps: int
    block_size: int
    num_clean_prefix: int
    num_clean_suffix: int  # trailing clean conditions (an end frame), never updated
    step_index: np.ndarray  # (rows, frames) int64, see module doc
    update_mask: np.ndarray  # (rows, frames) bool: frames stepped by the sampler at this row

    @property
    def num_rows(self) -> int:
        return self.step_index.shape[0]

    @property
    def num_frames(self) -> int:
        return self.step_index.shape[1]

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """[start, end) latent frames of each causal block; the last one may be shorter. A clean suffix is a
        block of its own."""
        f, b = self.num_frames - self.num_clean_suffix, self.block_size
        suffix = [(f, self.num_frames)] if self.num_clean_suffix else []
        return [(s, min(s + b, f)) for s in range(0, f, b)] + suffix

    @property
    def active_spans(self) -> list[tuple[int, int]]:
        """Per row, the [start, end) frames updated. A block-causal model must see frames [0, end):
        frames before `start` are finished or clean context, frames from `end` on have not started."""
        spans = []
        for row in self.update_mask:
            idx = np.flatnonzero(row)
            spans.append((int(idx[0]), int(idx[-1]) + 1))
        return spans

    @property
    def valid_windows(self) -> list[tuple[int, int]]:
        """Per row, the frames a model with full (bidirectional) attention must see: the whole window,
        as in the reference pipeline. With block-causal attention `active_spans` ends are enough."""
        return [(0, self.num_frames)] * self.num_rows

    def timesteps(self, template) -> np.ndarray:
        """(rows, frames) timestep of every frame at every row, given the scheduler's `num_steps` timesteps."""
        template = np.asarray(template)
        if template.shape != (self.num_steps,):
            raise ValueError(f"template must hold {self.num_steps} timesteps, got shape {template.shape}")
        lookup = np.concatenate([[NOT_STARTED_TIMESTEP], template, [0]]).astype(template.dtype)
        return lookup[self.step_index]


def plan_ad_schedule(
    num_steps: int,
    num_frames: int,
    block_size: int = 1,
    ar_step: int = 0,
    num_clean_prefix: int = 0,
    num_clean_suffix: int = 0,
) -> ADSchedule:
    """Plan the AD schedule of one window of `num_frames` latent frames (report section 3.4.2).

    Blocks fully inside the clean prefix count as finished; a block that the prefix only partly covers is
    scheduled as usual and its prefix frames are simply never updated. The last `num_clean_suffix` frames
    (an end frame to steer towards) are clean conditions throughout: timestep 0 at every row, as the
    reference image-to-video pipeline feeds its `last_image`.
    """
    if num_clean_suffix:
        if not 0 < num_clean_suffix < num_frames - num_clean_prefix:
            raise ValueError(f"num_clean_suffix ({num_clean_suffix}) must leave frames to generate between "
                             f"the prefix ({num_clean_prefix}) and the end of {num_frames} frames")
        head = plan_ad_schedule(num_steps, num_frames - num_clean_suffix, block_size, ar_step, num_clean_prefix)
        rows = head.num_rows
        step_index = np.concatenate([head.step_index, np.full((rows, num_clean_suffix), num_steps + 1)], axis=1)
        update_mask = np.concatenate([head.update_mask, np.zeros((rows, num_clean_suffix), bool)], axis=1)
        return ADSchedule(num_steps, block_size, num_clean_prefix, num_clean_suffix, step_index, update_mask)
    for name, value, low in (("num_steps", num_steps, 1), ("num_frames", num_frames, 1),
                             ("block_size", block_size, 1), ("ar_step", ar_step, 0),
                             ("num_clean_prefix", num_clean_prefix, 0)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if num_clean_prefix > num_frames:
        raise ValueError(f"num_clean_prefix ({num_clean_prefix}) exceeds num_frames ({num_frames})")

    num_blocks = -(-num_frames // block_size)
    ready = num_blocks if num_clean_prefix == num_frames else num_clean_prefix // block_size
    lag = min(ar_step, num_steps)
    start_row = np.full(num_blocks, -(num_steps + 1), dtype=np.int64)  # ready blocks: finished long ago
    start_row[ready:] = np.arange(num_blocks - ready) * lag
    num_rows = int(start_row[-1]) + num_steps if ready < num_blocks else 0

    rows = np.arange(num_rows, dtype=np.int64)[:, None]
    block_index = np.clip(rows - start_row[None, :] + 1, 0, num_steps + 1)  # (rows, blocks)
    frame_block = np.arange(num_frames) // block_size
    step_index = block_index[:, frame_block]
    step_index[:, :num_clean_prefix] = num_steps + 1
    update_mask = (step_index >= 1) & (step_index <= num_steps)
    return ADSchedule(num_steps, block_size, num_clean_prefix, 0, step_index, update_mask)


@dataclass(frozen=True)
class Window:
    """One model window of a long video, in latent frames."""

    video_start: int  # latent frame of the video where window frame 0 sits
    num_frames: int
    num_clean_prefix: int  # window frames [0, prefix) are copied from the video so far
    keep_from: int  # window frames [keep_from, num_frames) are appended to the video


def plan_windows(num_latent_frames: int, base_latent_frames: int, overlap_latent_frames: int,
                 block_size: int = 1) -> list[Window]:
    """Sliding windows of a long video (report section 5.4; upstream README `overlap_history`).

    Window 0 is `base_latent_frames` long. Each later window re-reads the last `overlap_latent_frames` of
    the video, of which the first multiple of `block_size` are clean conditions (the reference keeps whole
    blocks of history only), and contributes the frames after the overlap; the last window is shortened to
    the frames left. Layout and counts follow the reference pipeline, so a seed gives the same noise.
    """
    if num_latent_frames <= base_latent_frames:
        return [Window(0, num_latent_frames, 0, 0)]
    if not 0 < overlap_latent_frames < base_latent_frames:
        raise ValueError(f"overlap ({overlap_latent_frames} latent frames) must be in (0, base window "
                         f"{base_latent_frames}) for a long video")
    prefix = overlap_latent_frames - overlap_latent_frames % block_size
    stride = base_latent_frames - overlap_latent_frames
    windows = [Window(0, base_latent_frames, 0, 0)]
    done = base_latent_frames
    while done < num_latent_frames:
        size = min(num_latent_frames - done + overlap_latent_frames, base_latent_frames)
        windows.append(Window(done - overlap_latent_frames, size, prefix, overlap_latent_frames))
        done += stride
    return windows


def solver_groups(schedule: ADSchedule) -> list[tuple[int, int]]:
    """Runs of consecutive generated frames that take every step together (whole blocks; the whole window
    when synchronous). The multistep solver is elementwise in the sample, so one solver state steps each run
    at once, exactly as one state per frame (the reference) would."""
    lo, hi = schedule.num_clean_prefix, schedule.num_frames - schedule.num_clean_suffix
    groups: list[tuple[int, int]] = []
    for s, e in schedule.blocks:
        s, e = max(s, lo), min(e, hi)
        if s >= e:
            continue
        if groups and groups[-1][1] == s and (schedule.step_index[:, s] == schedule.step_index[:, s - 1]).all():
            groups[-1] = (groups[-1][0], e)
        else:
            groups.append((s, e))
    return groups
