"""The stage contract (docs/architecture.md): resume check, MLflow child run, atomic publish.

A stage module supplies only its body: ``body(work) -> pyarrow.Table``. ``run_stage`` decides
whether the stage must run at all (``_SUCCESS.json`` with the same resume key = skip), gives the
body a private temporary folder, publishes the table with one rename, and logs params, metrics,
inputs and artifacts to the stage's child run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from infra import manifest as mf
from infra import storage
from infra.cluster_events import dead_nodes
from infra.config import PipelineConfig, config_hash
from infra.shards import Shards
from infra.tracking import Tracker

log = logging.getLogger("reelflow.stage")
SAMPLE_ROWS = 50


@dataclass
class StageContext:
    """What every stage receives: where the run lives, how it is tracked, which profile."""

    run_id: str
    run_uri: str
    cfg: PipelineConfig
    tracker: Tracker
    parent_run: str
    code_version: str = "unknown"
    replay: str | None = None  # a stage to run again although published (``reelflow run --replay``)

    @property
    def profile(self) -> str:
        return self.cfg.profile

    def stage_uri(self, name: str) -> str:
        return storage.join(self.run_uri, name)


@dataclass
class StageWork:
    """Handed to a stage body: its private output folder and places to put what it measured."""

    name: str
    tmp_uri: str
    final_uri: str
    scratch_dir: str  # local folder for plots / contact sheets before they become artifacts
    metrics: dict[str, float] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    mlflow_run: str = ""  # the stage's child run, for bodies that log as they go (training curves)


def run_stage(
    ctx: StageContext,
    name: str,
    cfg: BaseModel,
    inputs: list[mf.Manifest],
    body: Callable[[StageWork], pa.Table | Shards],
    key_extra: str = "",
) -> mf.Manifest:
    """``key_extra`` identifies inputs that are not manifests (e.g. a raw folder's listing)."""
    chash = config_hash(cfg) + (f"+{key_extra}" if key_extra else "")
    final_uri = ctx.stage_uri(name)
    key = mf.resume_key(chash, inputs)
    done = mf.load_success(final_uri)
    if done is not None and done.resume_key == key and name != ctx.replay:
        log.info("stage %-8s skipped: already published (%d rows) at %s", name, done.row_count, final_uri)
        return done
    for upstream in inputs:
        if upstream.error_count:
            log.info("stage %s: %d error rows in %s are carried, not processed", name, upstream.error_count, upstream.stage)
    tags = {"reelflow.run_id": ctx.run_id, "reelflow.git_sha": ctx.code_version, "reelflow.profile": ctx.profile}
    with ctx.tracker.child(ctx.parent_run, name, tags) as rid, tempfile.TemporaryDirectory() as scratch:
        ctx.tracker.log_params(rid, cfg.model_dump(mode="json"))
        for upstream in inputs:
            sample = mf.read_head(upstream, SAMPLE_ROWS)
            ctx.tracker.log_input(rid, sample, upstream.uri, upstream.stage, upstream.fingerprint)
        tmp_uri = mf.tmp_dir_for(final_uri)
        storage.makedirs(tmp_uri)
        # The child run id is published with the stats, so a later step (model registration) finds the
        # run that produced the output whether the stage ran now or was skipped as already published.
        work = StageWork(name, tmp_uri, final_uri, scratch, stats={"mlflow_run": rid}, mlflow_run=rid)
        started = time.time()
        dead_before = dead_nodes()
        log.info("stage %-8s running -> %s", name, final_uri)
        try:
            table = body(work)
            # the sample before publishing: a sharded output's shards are merged (and gone) by then
            head = table.head(SAMPLE_ROWS) if isinstance(table, Shards) else table.slice(0, SAMPLE_ROWS)
            if lost := len(dead_nodes() - dead_before):  # the stage survived losing Ray nodes: on record
                log.warning("stage %s: completed after losing %d Ray node(s) (work retried elsewhere)", name, lost)
                work.metrics["ray_nodes_lost"] = lost
            manifest = mf.publish(
                table, tmp_uri, final_uri, stage=name, config_hash=chash, inputs=inputs,
                code_version=ctx.code_version, started=started, stats=work.stats,
            )
        except BaseException:
            storage.remove(tmp_uri)  # nothing half-written survives under any name
            raise
        seconds = max(manifest.seconds, 1e-9)
        ctx.tracker.log_metrics(
            rid,
            {"rows": manifest.row_count, "error_rows": manifest.error_count, "seconds": seconds,
             "rows_per_s": manifest.row_count / seconds, **work.metrics},
        )
        _log_outputs(ctx.tracker, rid, manifest, mf.to_pandas(head), scratch, work.artifacts)
    log.info(
        "stage %-8s done: %d rows (%d errors) in %.1fs", name, manifest.row_count, manifest.error_count, seconds
    )
    return manifest


def _log_outputs(
    tracker: Tracker, rid: str, manifest: mf.Manifest, head: pd.DataFrame, scratch: str, extra: list[str]
) -> None:
    success = os.path.join(scratch, mf.SUCCESS)
    with open(success, "w") as fh:
        fh.write(mf.success_record(manifest))  # the published record: paths relative to the run root
    sample = os.path.join(scratch, "sample.csv")
    head.to_csv(sample, index=False)
    for path in (success, sample, *extra):
        tracker.log_artifact(rid, path)
