"""Shared set-up for the pair-audit tests: a run whose published ``pairs`` stage left human pairs pending."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa

from infra import manifest as mf
from infra.video import write_video
from tasks.post.pairs import SCHEMA, pair_row


def _video(path: str, seed: int, moving: bool) -> None:
    """A tiny 64x36 mp4: a square sweeping across (moving) or still noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(12):
        frame = rng.integers(0, 60, (36, 64, 3), dtype=np.uint8)
        x = 4 * t if moving else 20
        frame[10:26, x:x + 16] = 230
        frames.append(frame)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_video(frames, path, 24)


def pairs_run(ctx, n_pending: int = 3) -> tuple[mf.Manifest, list[str]]:
    """Publish a ``pairs`` stage into ``ctx``'s run: ``n_pending`` pending human pairs, plus an automatic
    pair, a discarded human pair and an error row (none of which a reviewer sees). Returns the
    manifest and the pending pair ids in order."""
    final = ctx.stage_uri("pairs")
    tmp = mf.tmp_dir_for(final)
    rows, pending = [], []
    for i in range(n_pending + 2):
        rel = [f"human/p{i}/sample-0.mp4", f"human/p{i}/sample-1.mp4"]
        for k, r in enumerate(rel):
            _video(os.path.join(tmp, r), 10 * i + k, moving=k == 0)
        kind = "auto" if i == n_pending + 1 else "human"
        row = pair_row(pair_id=f"{i:02d}" + "ab" * 7, kind=kind, prompt=f"a red square crosses the frame, take {i}",
                       a_uri=os.path.join(final, rel[0]), b_uri=os.path.join(final, rel[1]), a_desc="sample-0",
                       b_desc="sample-1", label="a" if kind == "auto" else None,
                       label_source="auto" if kind == "auto" else "pending", seed=i)
        if i == n_pending:
            row.update(discarded=True, discard_reason="videos differ by 0.001 < min_difference 0.01")
        rows.append(row)
        if kind == "human" and not row["discarded"]:
            pending.append(row["pair_id"])
    rows.append(pair_row(pair_id="ee" * 8, kind="human", prompt="broken", label_source="pending", error="ValueError: x"))
    manifest = mf.publish(pa.Table.from_pylist(rows, schema=SCHEMA), tmp, final, stage="pairs", config_hash="c",
                          inputs=[], code_version="test", started=time.time())
    return manifest, pending
