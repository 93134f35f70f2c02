"""What the people watching a run see: the pipeline's summary on its MLflow parent run (description, summary
metrics, funnel and timeline charts, the final video) and in Prefect (stage logs on the flow-run page, a
markdown artifact per flow run with the funnel and links to the MLflow runs)."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from infra import run_summary
from infra.stage import StageContext
from infra.tracking import display_name

log = logging.getLogger("reelflow.summary")
# Loggers whose records belong on the Prefect flow-run page: the stages, the flows and the shared infra.
RUN_LOGGERS = ("reelflow", "tasks", "infra", "models", "flows")
MLFLOW_UI = "http://127.0.0.1:5000"  # `make ui`; a tracking server's own address when there is one
# MLflow 3.17's UI picks GenAI or model-training pages from this query (else a per-browser setting, GenAI
# by default), whatever the experiment's mlflow.experimentKind tag says: links open the training view.
TRAINING_VIEW = "?workflowType=machine_learning"


class _InRunOnly(logging.Filter):
    """Prefect's API handler needs a flow or task run; records logged outside one (CLI, tests) stay local."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def attach_prefect_logs() -> None:
    """Sends the stage loggers' records to the Prefect run they happen in (Prefect only ships records of its
    own ``prefect.*`` loggers, so without this every flow run reads "This run didn't generate logs").
    Idempotent; the loggers' levels stay as the CLI set them."""
    from prefect.logging.handlers import APILogHandler

    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            handler = APILogHandler()
            handler.addFilter(_InRunOnly())
            logger.addHandler(handler)


def mlflow_ui_base(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return os.environ.get("REELFLOW_MLFLOW_UI", MLFLOW_UI).rstrip("/")


def run_links(ctx: StageContext) -> dict[str, str]:
    """The parent run and each stage's live child run (the latest attempt), as MLflow UI links."""
    tracker = ctx.tracker
    base = f"{mlflow_ui_base(tracker.tracking_uri)}/#/experiments/{tracker.experiment_id}/runs"
    links = {"pipeline": f"{base}/{ctx.parent_run}{TRAINING_VIEW}"}
    children = tracker.client.search_runs([tracker.experiment_id], order_by=["attributes.start_time ASC"],
                                          filter_string=f"tags.`mlflow.parentRunId` = '{ctx.parent_run}'")
    for run in children:
        if not run.data.tags.get("reelflow.superseded_by"):
            links[display_name(run.data.tags.get("reelflow.stage", run.info.run_name))] = f"{base}/{run.info.run_id}{TRAINING_VIEW}"
    return links


def _gates(ctx: StageContext) -> dict[str, float]:
    metrics = ctx.tracker.client.get_run(ctx.parent_run).data.metrics
    return {k.removeprefix("bad_case_rate."): v for k, v in sorted(metrics.items()) if k.startswith("bad_case_rate.")}


def report_run(ctx: StageContext, ok: bool, error: str | None, flow: str = "pipeline") -> dict:
    """Summarise the run so far on the MLflow parent run and as this flow run's Prefect artifact."""
    summary = run_summary.summarise(run_summary.published(ctx.run_uri), _gates(ctx))
    links = run_links(ctx)
    text = run_summary.markdown(ctx.run_id, ctx.profile, ok, error, summary, links)
    if flow == "pipeline":
        tracker, rid = ctx.tracker, ctx.parent_run
        tracker.describe(rid, run_summary.markdown(ctx.run_id, ctx.profile, ok, error, summary))
        tracker.log_metrics(rid, run_summary.metrics(summary))
        with tempfile.TemporaryDirectory() as out:
            for path in run_summary.charts(summary, out):
                tracker.log_artifact(rid, path, "summary")
            with open(os.path.join(out, "summary.json"), "w") as fh:
                json.dump({"run_id": ctx.run_id, "ok": ok, "error": error, **summary}, fh, indent=1)
            tracker.log_artifact(rid, fh.name, "summary")
            video = _local(ctx, summary["video"])
            if video:
                tracker.log_artifact(rid, video, "summary")
    funnel = " -> ".join(f"{k} {v}" for k, v in summary["funnel"].items()) or "no dataset yet"
    log.log(logging.INFO if ok else logging.WARNING, "%s %s: %s; funnel %s", flow, ctx.run_id,
            "finished" if ok else f"stopped ({error})", funnel)
    _prefect_artifact(flow, ctx.run_id, text)
    return summary


@contextmanager
def reported(ctx: StageContext, flow: str) -> Iterator[None]:
    """Runs a flow's body, then summarises the run whatever the outcome; a summary that cannot be made is a
    warning, never the run's failure (and never hides the body's own error)."""
    ok, error = False, None
    try:
        yield
        ok = True
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            report_run(ctx, ok, error, flow)
        except Exception as exc:  # noqa: BLE001 - the summary is a view; the run's outcome stands
            log.warning("no %s summary for run %s: %s: %s", flow, ctx.run_id, type(exc).__name__, exc)


def _local(ctx: StageContext, uri: str | None) -> str | None:
    """A local file for a recorded location (absolute, or relative to the run folder or the run root)."""
    if not uri or "://" in uri.replace("file://", ""):
        return None
    path = uri.removeprefix("file://")
    for candidate in (path, os.path.join(ctx.run_uri, path), os.path.join(os.path.dirname(ctx.run_uri), path)):
        if os.path.isfile(candidate):
            return candidate
    return None


def _prefect_artifact(flow: str, run_id: str, text: str) -> None:
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    key = re.sub(r"[^a-z0-9-]+", "-", f"{flow}-{run_id}".lower()).strip("-")[:100]
    create_markdown_artifact(text, key=key, description=f"reelflow {flow} summary of run {run_id}")
