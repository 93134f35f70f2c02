"""Dual-axis bucketed batches from the latent cache (report section 3.3).

Samples of one bucket (same latent frames x aspect ratio -> same shape) are batched together; a
bucket's batch size follows a token budget, so short/low-res buckets take more samples per step.
The order is a pure function of (seed, epoch): the data position (epoch, batch index) is all a
step checkpoint needs to resume the exact same stream.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from infra.config_train import ResolutionConfig, fps_index


def tokens_per_sample(latent_shape: tuple[int, ...], patch=(1, 2, 2)) -> int:
    """DiT tokens of one latent [C, F, h, w] after (t, h, w) patching."""
    _, f, h, w = latent_shape
    return (f // patch[0]) * (h // patch[1]) * (w // patch[2])


def bucket_batch_size(tokens: int, res: ResolutionConfig, world_size: int = 1) -> int:
    """token_budget // tokens, capped, rounded up to a multiple of ``world_size``.

    The training loop calls it with world_size 1: the batch plan is a function of the data and the config,
    never of how many ranks run it, so N ranks train on exactly the batches one process would (and a run
    restarted on fewer workers continues the same stream). Uneven shares are handled by ``shard_rows``."""
    size = max(1, min(res.max_batch, res.token_budget // max(1, tokens)))
    return world_size * math.ceil(size / world_size)


@dataclass(frozen=True)
class Position:
    epoch: int = 0
    index: int = 0  # batches of this epoch already consumed


def epoch_batches(buckets: dict[str, list[int]], sizes: dict[str, int], seed: int, epoch: int) -> list[list[int]]:
    """All batches of one epoch: indices shuffled within each bucket, chunked, batches shuffled."""
    rng = random.Random(f"{seed}:{epoch}")
    batches = []
    for name in sorted(buckets):
        idx = list(buckets[name])
        rng.shuffle(idx)
        size = sizes[name]
        batches += [idx[i : i + size] for i in range(0, len(idx), size)]
    rng.shuffle(batches)
    return batches


def batch_stream(buckets: dict[str, list[int]], sizes: dict[str, int], seed: int,
                 start: Position = Position()) -> Iterator[tuple[Position, list[int]]]:
    """Endless (position after the batch, batch) pairs, epoch after epoch, from ``start``."""
    if not any(buckets.values()):
        raise ValueError("the training set is empty: no cached sample in any bucket")
    epoch, index = start.epoch, start.index
    while True:
        batches = epoch_batches(buckets, sizes, seed, epoch)
        for i in range(index, len(batches)):
            yield Position(epoch, i + 1), batches[i]
        epoch, index = epoch + 1, 0


@dataclass
class Batch:
    latents: torch.Tensor  # [B, C, F, h, w]
    text: torch.Tensor  # [B, text_len, D], zero-padded as diffusers pads prompt embeddings
    fps: torch.Tensor  # [B] FPS-embedding indices
    tokens: int

    def shard(self, rank: int, world: int) -> Batch:
        """This rank's share of a global batch (data parallel, ``shard_rows``)."""
        rows, _ = shard_rows(self.latents.shape[0], rank, world)
        return Batch(self.latents[rows], self.text[rows], self.fps[rows], self.tokens // world)


def shard_rows(n: int, rank: int, world: int) -> tuple[list[int], float]:
    """(rows of a global batch of ``n`` samples that ``rank`` of ``world`` trains on, its loss weight).

    Every rank gets a non-empty share, and the shares of the real samples are disjoint: rows rank::world
    (sizes differ by at most one). A batch shorter than the world (the last one of a bucket) is padded by
    rule: rank r >= n repeats row r % n with weight 0, so it runs the same forward/backward and collectives
    as its peers but adds nothing. The weight len(rows) * world / n makes the mean over ranks of
    ``weight * (mean loss of the share)`` -- what the engines' gradient averaging computes -- equal to the
    full batch's mean loss, so N ranks follow the single-process run; it is exactly 1.0 for one rank."""
    if n <= 0:
        raise ValueError("an empty global batch cannot be sharded")
    if rank >= n:
        return [rank % n], 0.0
    rows = list(range(rank, n, world))
    return rows, len(rows) * world / n


def pad_text(texts: list[torch.Tensor], text_len: int) -> torch.Tensor:
    """[B, text_len, D] from unpadded [L_i, D] features: zero-padded (or cut) as diffusers pads prompt embeddings."""
    out = torch.zeros(len(texts), text_len, texts[0].shape[-1], dtype=texts[0].dtype)
    for i, text in enumerate(texts):
        n = min(text_len, text.shape[0])
        out[i, :n] = text[:n]
    return out


def collate(samples, text_len: int) -> Batch:
    latents = torch.stack([s.latent for s in samples])
    text = pad_text([s.text for s in samples], text_len)
    fps = torch.tensor([fps_index(s.fps) for s in samples], dtype=torch.long)
    return Batch(latents, text, fps, tokens_per_sample(tuple(latents.shape[1:])) * len(samples))
