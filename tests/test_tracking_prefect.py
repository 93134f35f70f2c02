"""Prefect shows what ran (real Prefect server, the one the tests share): stage loggers' records land on the
flow run, task runs are named after the stage they run, and a flow run publishes its summary as a markdown
artifact with the funnel and links to its MLflow runs."""

from __future__ import annotations

import logging

from infra.stage import StageContext
from infra.tracking import Tracker, default_tracking_uri


def _stage(ctx, round: int) -> int:
    logging.getLogger("reelflow.stage").warning("stage dpo-%d running (test line)", round)
    return round


def test_stage_logs_names_and_summary_reach_prefect(make_cfg, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, LogFilter
    from prefect.logging.handlers import APILogHandler

    from flows.stages import stage_task
    from flows.summary import attach_prefect_logs, reported

    cfg = make_cfg()
    uri, artifacts = default_tracking_uri(cfg.storage.run_root, cfg.state_dir)
    tracker = Tracker(uri, "reelflow-test", artifact_root=artifacts)
    run_uri = str(tmp_path / "runs" / "pf")
    ctx = StageContext(run_id="pf", run_uri=run_uri, cfg=cfg, tracker=tracker,
                       parent_run=tracker.start_parent("pf", {}, {}))
    with tracker.child(ctx.parent_run, "dpo-2", {}):
        pass
    dpo_task = stage_task(_stage, "dpo", "dpo-{round}")

    @flow(name="pf-test", flow_run_name="pf")
    def run_it() -> int:
        attach_prefect_logs()
        with reported(ctx, "post-train"):
            return dpo_task(ctx, 2)

    logger = logging.getLogger("reelflow")
    level = logger.level
    logger.setLevel(logging.INFO)  # as the CLI sets it: the summary line is INFO
    try:
        state = run_it(return_state=True)
    finally:
        logger.setLevel(level)
    assert state.is_completed()
    APILogHandler().flush()  # logs ship in batches: drain them before reading back
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id={"any_": [flow_run_id]}))
        artifact = client.read_artifacts(artifact_filter=ArtifactFilter(key={"any_": ["post-train-pf"]},
                                                                     flow_run_id={"any_": [flow_run_id]}))
    assert [r.name for r in runs] == ["dpo-2"]
    lines = [entry.message for entry in logs]
    assert any("stage dpo-2 running (test line)" in m for m in lines), lines
    assert any("post-train pf: finished" in m for m in lines), lines
    (art,) = artifact
    assert art.type == "markdown" and art.flow_run_id == flow_run_id
    assert "`pf`" in art.data and "FINISHED" in art.data and f"runs/{ctx.parent_run}" in art.data
    assert "[dpo-2](" in art.data
