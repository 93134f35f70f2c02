"""The data of stage ``sft-camera`` (report section 5.5, Camera Director): the view ``D_camera``.

The SFT dataset's member clips (``post.camera.source``) with a structured caption are classed by their
camera label (the caption stage's camera expert: 6DoF moves and speed class, ``models.camera_balance``)
and balanced over those classes as concept balancing balances subject categories (``models.balance``). The
view holds each kept clip as many times as it is repeated (``camera_repeat``), so the latent cache and
the trainer sample it that often; ``in_D_camera`` marks every row. The label shares before and after go to
MLflow as metrics; the training is the ``sft-camera`` entry of ``train.stages`` (flows/post_train.py).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from infra import manifest as mf
from infra.config_post import CameraBalanceConfig
from infra.manifest import Manifest
from infra.stage import StageContext, StageWork, run_stage
from infra.tables import flag
from models.camera_balance import balance_camera, camera_class, imbalance

NAME = "D_camera"


def camera_labels(table: pa.Table, source: str) -> tuple[np.ndarray, list[dict]]:
    """(indices of the eligible rows, their camera_motion labels): members of ``source`` without error whose
    caption_json parses and holds a camera_motion."""
    for column in (flag(source), "caption_json"):
        if column not in table.column_names:
            raise ValueError(f"{NAME}: dataset {source} has no column {column!r}; post.camera.source must name a "
                             "captioned D_* dataset (the caption stage adds caption_json)")
    member = pc.fill_null(pc.cast(table.column(flag(source)), pa.bool_()), False).to_numpy(zero_copy_only=False)
    ok = np.ones(table.num_rows, bool) if "error" not in table.column_names else \
        pc.is_null(table.column("error")).to_numpy(zero_copy_only=False)
    captions = table.column("caption_json").to_pylist()
    index, labels = [], []
    for i in np.flatnonzero(member & ok):
        motion = json.loads(captions[i]).get("camera_motion") if captions[i] else None
        if motion:
            index.append(int(i))
            labels.append(motion)
    return np.asarray(index, np.int64), labels


def run(ctx: StageContext, cfg: CameraBalanceConfig, source: Manifest) -> Manifest:
    """Stage ``D_camera``: the camera-balanced rows of the SFT dataset (repeated), flagged ``in_D_camera``."""

    def body(work: StageWork) -> pa.Table:
        table = mf.read_arrow(source)
        index, motions = camera_labels(table, cfg.source)
        if not len(index):
            raise ValueError(f"{NAME}: {cfg.source} has no member clip with a camera label (caption_json."
                             "camera_motion); check the caption stage, or switch sft-camera off "
                             "(train.stages.sft-camera.enabled=false)")
        ids = pc.cast(table.column("clip_id"), pa.string()).take(pa.array(index)).to_pylist()
        repeats, summary = balance_camera(ids, motions, cfg.keep_fraction, cfg.max_repeat, cfg.seed, cfg.target or None)
        rows = np.repeat(index, repeats)
        out = table.take(pa.array(rows, pa.int64()))
        out = out.append_column("camera_class", pa.array([camera_class(motions[k]) for k in
                                                          np.repeat(np.arange(len(index)), repeats)], pa.string()))
        out = out.append_column("camera_repeat", pa.array(np.repeat(np.asarray(repeats, np.int64), repeats)))
        out = out.append_column(flag(NAME), pa.array(np.ones(len(rows), bool)))
        for key in ("clips_before", "samples_after", "unique_after"):
            work.metrics[key] = summary[key]
        for when in ("before", "after"):
            work.metrics[f"class_imbalance_{when}"] = imbalance(summary[when]["class"])
            for kind in ("speed", "move"):
                for label, share in summary[when][kind].items():
                    # MLflow metric names take no '+': yaw+ -> yaw_pos
                    work.metrics[f"{kind}_share_{when}.{label.replace('+', '_pos').replace('-', '_neg')}"] = share
        work.stats.update(summary)
        return out

    return run_stage(ctx, NAME, cfg, [source], body)
