"""Open (or reopen) a pipeline run: storage, tracking, parent MLflow run, Ray.

Idempotent by run id, so every phase flow can open the run itself and also run standalone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re

from infra import manifest as mf
from infra import runlock, storage
from infra.config import PipelineConfig
from infra.runtime import init_ray
from infra.stage import StageContext
from infra.tracking import Tracker, default_tracking_uri, git_sha

log = logging.getLogger("reelflow")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SESSIONS: dict[str, StageContext] = {}


# Not part of a run's identity: how its gates are audited (a failed gate is continued with another
# audit mode or threshold on the same run) and where it is stored or tracked (a moved store resumes).
RUN_ID_EXCLUDES = {"audit", "storage", "state_dir", "tracking", "prefect"}


def default_run_id(cfg: PipelineConfig) -> str:
    """Same command -> same run id, so rerunning it resumes instead of starting over; the audit
    settings and the storage/tracking locations are left out (``RUN_ID_EXCLUDES``)."""
    state = cfg.state_dir.rstrip("/")

    def placed(value):  # caches default to folders under state_dir: the same place, wherever it is
        if isinstance(value, dict):
            return {k: placed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [placed(v) for v in value]
        return "<state_dir>" + value[len(state):] if isinstance(value, str) and value.startswith(state + "/") else value

    blob = json.dumps(placed(cfg.model_dump(mode="json", exclude=RUN_ID_EXCLUDES)), sort_keys=True).encode()
    return f"{cfg.profile}-{hashlib.sha256(blob).hexdigest()[:8]}"


def validate_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ValueError(
            f"run id {run_id!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (it becomes a folder name and an MLflow tag)"
        )
    return run_id


def tracker_for(cfg: PipelineConfig) -> Tracker:
    uri, artifacts = default_tracking_uri(cfg.storage.run_root, cfg.state_dir)
    return Tracker(cfg.tracking.mlflow_uri or uri, cfg.tracking.experiment, artifact_root=artifacts)


def open_run(cfg: PipelineConfig, run_id: str) -> StageContext:
    if run_id in _SESSIONS:
        return _SESSIONS[run_id]
    validate_run_id(run_id)
    storage.configure_storage(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)
    run_uri = storage.join(storage.normalize(cfg.storage.run_root), run_id)
    storage.makedirs(run_uri)
    # One writer per run: held before the stale temporaries go, so the ones removed can only be a
    # dead writer's (a live one holds the lock, and this call refuses naming it).
    runlock.hold(run_uri, run_id, cfg.state_dir)
    for stale in mf.clean_stale_tmp(run_uri):
        log.warning("removed unpublished output of an interrupted attempt: %s", stale)
    try:
        tracker = tracker_for(cfg)
        sha = git_sha()
        parent = tracker.start_parent(
            run_id, cfg.model_dump(mode="json"), {"reelflow.git_sha": sha, "reelflow.profile": cfg.profile}
        )
        init_ray(cfg)
    except BaseException:
        runlock.release(run_uri)
        raise
    ctx = StageContext(run_id=run_id, run_uri=run_uri, cfg=cfg, tracker=tracker, parent_run=parent, code_version=sha)
    _SESSIONS[run_id] = ctx
    return ctx


def close_run(ctx: StageContext, ok: bool) -> None:
    try:
        ctx.tracker.end(ctx.parent_run, ok)
    finally:
        _SESSIONS.pop(ctx.run_id, None)
        runlock.release(ctx.run_uri)


def run_uri_for(cfg: PipelineConfig, run_id: str) -> str:
    return storage.join(storage.normalize(cfg.storage.run_root), validate_run_id(run_id))


def hold_run(cfg: PipelineConfig, run_id: str) -> runlock.RunLock:
    """Take the run's lock before any work (``reelflow run`` calls it first, so a second run with
    the same id refuses at once instead of after starting Prefect and Ray)."""
    storage.configure_storage(cfg.storage.s3_endpoint_url, cfg.storage.s3_region)
    run_uri = run_uri_for(cfg, run_id)
    storage.makedirs(run_uri)
    return runlock.hold(run_uri, run_id, cfg.state_dir)
