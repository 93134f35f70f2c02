"""The whole job: (synthetic corpus when no input) -> curation. Later phases plug in here."""

from __future__ import annotations

from prefect import flow

from flows.curate import curate, stage_task
from infra.config import PipelineConfig
from infra.manifest import Manifest
from infra.session import close_run, open_run
from tasks.corpus import stage as corpus_stage

corpus_task = stage_task(corpus_stage.run, "corpus")


@flow(name="reelflow-pipeline", flow_run_name="{run_id}")
def pipeline(cfg: PipelineConfig, run_id: str, until: str | None = None) -> Manifest:
    ctx = open_run(cfg, run_id)
    ok = False
    try:
        input_uri = cfg.input or corpus_task(ctx, cfg.corpus).uri
        result = curate(cfg, run_id, input_uri, until)
        ok = True
        return result
    finally:
        close_run(ctx, ok)
