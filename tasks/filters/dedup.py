"""Near-duplicate filter (report section 3.1: "deduplication", a copy-detection embedding per clip).

Embedding: the picture inside any letterbox / pillarbox bars of each of ``frames`` samples, reduced to a ``grid`` x ``grid`` grey image (area average:
robust to re-encoding, small crops and overlays), made zero-mean and unit-norm (robust to brightness
gain), averaged over the samples and normalised again. Two clips are near-duplicates when the cosine
similarity reaches ``similarity_min``; groups are the connected components of that relation, and one
clip per group is kept (the longest, then the smallest clip_id: a stable choice).
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

from infra.config_filters import DedupConfig
from tasks.filters.black import black_frames
from tasks.filters.border import picture_box
from tasks.filters.frames import ClipFrames

BAR_LUMA = 20.0  # the border filter's default


def frame_signature(grey: np.ndarray, grid: int) -> np.ndarray:
    small = cv2.resize(grey, (grid, grid), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    return small / (np.linalg.norm(small) + 1e-6)


def clip_embedding(clip: ClipFrames, cfg: DedupConfig) -> np.ndarray:
    grey = clip.grey_samples
    lit = grey[~black_frames(grey, BAR_LUMA)]
    if len(lit):  # bars would make every letterboxed clip look alike: embed the picture only
        x, y, w, h = picture_box(lit, BAR_LUMA, 0.02)
        grey = grey[:, y:y + h, x:x + w]
    vec = np.mean([frame_signature(grey[i], cfg.grid) for i in clip.pick(cfg.frames)], axis=0)
    return (vec / (np.linalg.norm(vec) + 1e-6)).astype(np.float32)


class DedupFilter:
    """Per clip: the embedding. Across clips: :func:`group_duplicates` (run by the stage body)."""

    name = "dedup"
    columns = {"dedup_embedding": pa.list_(pa.float32())}

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg

    def __call__(self, clip: ClipFrames) -> dict:
        return {"dedup_embedding": clip_embedding(clip, self.cfg).tolist()}


GROUP_COLUMNS = {"score_dup": pa.float64(), "dup_group": pa.string(), "dup_keep": pa.bool_()}


def group_duplicates(clip_ids: list[str], embeddings: list, lengths: list[int], threshold: float) -> list[dict]:
    """Per clip (same order): ``score_dup`` (highest similarity to another clip), ``dup_group`` (the
    kept clip's id, shared by the group) and ``dup_keep``. Rows without an embedding get nulls."""
    have = [i for i, e in enumerate(embeddings) if e is not None]
    out = [{"score_dup": None, "dup_group": None, "dup_keep": None} for _ in clip_ids]
    if not have:
        return out
    emb = np.asarray([embeddings[i] for i in have], np.float32)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -1.0)
    parent = list(range(len(have)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(*np.nonzero(np.triu(sim >= threshold, 1)), strict=True):
        parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for k in range(len(have)):
        groups.setdefault(root(k), []).append(k)
    for members in groups.values():
        keep = min(members, key=lambda k: (-lengths[have[k]], clip_ids[have[k]]))
        for k in members:
            out[have[k]] = {"score_dup": float(max(sim[k].max(), 0.0)) if len(have) > 1 else 0.0,
                            "dup_group": clip_ids[have[keep]], "dup_keep": k == keep}
    return out
