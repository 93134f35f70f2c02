"""Synthetic scored pools for dataset / balance / audit tests (no video, no score stage needed)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from infra.config_datasets import load_columns
from models.balance import REPORT_BEFORE, draw_categories  # noqa: F401  (re-exported for the tests)


def clip_ids(n: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest()[:16] for i in range(n)]


def scored_pool(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A pool whose every expected score column is filled (under its mapped name), with defects
    on a random minority of clips so every profile rejects something."""
    rng = np.random.default_rng(seed)
    cols = load_columns()

    def spiky(share, high=(0.2, 1.0)):
        return np.where(rng.random(n) < share, rng.uniform(*high, n), 0.0)

    scores = {  # expected name -> values with the meaning columns.yaml documents
        "score_black": spiky(0.08, (0.04, 2.0)),  # seconds
        "score_static": spiky(0.08, (0.1, 3.0)),  # seconds
        "score_mosaic": spiky(0.05, (0.01, 0.5)),
        "score_text": spiky(0.15, (0.1, 1.0)),
        "score_subtitle": spiky(0.08, (0.1, 1.0)),
        "score_border": spiky(0.10, (0.1, 0.5)),
        "score_logo": spiky(0.05, (0.3, 1.0)),
        "score_sticker": spiky(0.05, (0.01, 0.3)),
        "dup_keep": rng.random(n) > 0.03,
        "score_aesthetic": rng.normal(5.0, 1.0, n).clip(0, 10),
        "score_motion": rng.lognormal(np.log(0.05), 1.2, n),
        "score_duration": rng.uniform(1.0, 10.0, n),
        "score_resolution": rng.choice([144, 180, 360, 540, 720, 1080], n, p=[.05, .15, .2, .2, .2, .2]),
        "score_iqa": rng.beta(5, 2, n),
        "score_vqa": rng.beta(5, 2, n),
        "score_vtss": rng.beta(5, 2, n),
    }
    df = pd.DataFrame({"clip_id": clip_ids(n), "error": [None] * n})
    for expected, values in scores.items():
        df[cols.get(expected, expected)] = values
    df["category"] = draw_categories(n, seed=seed)
    return df


def stage_ctx(cfg, tmp_path, run_id: str = "r1"):
    """A real StageContext (sqlite MLflow, local run folder) without starting Ray."""
    import os

    from infra.stage import StageContext
    from infra.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "test", artifact_root=f"file://{tmp_path}/art")
    parent = tracker.start_parent(run_id, {"a": 1}, {})
    run_uri = str(tmp_path / "runs" / run_id)
    os.makedirs(run_uri, exist_ok=True)
    return StageContext(run_id, run_uri, cfg, tracker, parent, "test")


def publish(ctx, df: pd.DataFrame, name: str = "score"):
    """Publish ``df`` as stage ``name`` of ``ctx``'s run (an input manifest for the stage under test)."""
    import pyarrow as pa

    from infra.config import ClipsConfig
    from infra.stage import run_stage

    return run_stage(ctx, name, ClipsConfig(), [], lambda work: pa.Table.from_pandas(df, preserve_index=False))
