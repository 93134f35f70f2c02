"""Distillation phase, after the report's main line: what is learnt from the artefacts the line made.

    captioner = Distill(SkyCaptioner, captions(base + sub-experts + fusion))   # 3.2, SkyCaptioner-V1

Each stage can be switched off in its config (``enabled: false``); ``--until`` on a switched-off stage is
refused rather than silently skipped.
"""

from __future__ import annotations

from prefect import flow

from flows.stages import Stages, UntilReached, stage_task
from flows.summary import attach_prefect_logs, reported
from infra.config import PipelineConfig
from infra.manifest import Manifest
from infra.session import open_run
from tasks.curate import captioner_distill

captioner_distill_task = stage_task(captioner_distill.run, "captioner-distill")


@flow(name="distill", flow_run_name="distill-{run_id}")
def distill_flow(cfg: PipelineConfig, run_id: str, curated: dict[str, Manifest], until: str | None = None) -> dict[str, Manifest]:
    """The manifests of the stages that ran, by name."""
    attach_prefect_logs()
    ctx = open_run(cfg, run_id)
    stages, distill = Stages("distill", until), cfg.stages.captioner_distill
    if until == "captioner-distill" and not distill.enabled:
        raise ValueError("--until captioner-distill: the stage is switched off "
                         "(stages.captioner_distill.enabled=false); set it to true or stop earlier")
    with reported(ctx, "distill"):
        try:
            if distill.enabled:
                stages.run("captioner-distill", captioner_distill_task, ctx, distill, cfg.stages.caption, curated["caption"])
        except UntilReached:
            pass
    return stages.done
