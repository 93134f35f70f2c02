"""Curation phase (report section 3.1): raw videos -> sources -> shots -> clips.

Reads like the report's pseudocode: ``shots = ShotSegmentation(D_raw, [PySceneDetect, TransNetV2])``.
One Prefect task per stage; the stage itself fans out over Ray Data.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from infra.config import STAGE_ORDER, PipelineConfig
from infra.manifest import Manifest
from infra.session import open_run
from tasks import clips, ingest, segment


def stage_task(fn, name: str):
    """A stage as one Prefect task: retries/caching are ours (resume by _SUCCESS.json)."""
    return task(fn, name=name, cache_policy=NO_CACHE, retries=0)


ingest_task = stage_task(ingest.run, "ingest")
segment_task = stage_task(segment.run, "segment")
clips_task = stage_task(clips.run, "clips")


def reached(until: str | None, stage: str) -> bool:
    return until is not None and STAGE_ORDER.index(until) <= STAGE_ORDER.index(stage)


@flow(name="curate", flow_run_name="curate-{run_id}")
def curate(cfg: PipelineConfig, run_id: str, input_uri: str, until: str | None = None) -> Manifest:
    ctx = open_run(cfg, run_id)
    sources = ingest_task(ctx, cfg.stages.ingest, input_uri)
    if reached(until, "ingest"):
        return sources
    shots = segment_task(ctx, cfg.stages.segment, sources)
    if reached(until, "segment"):
        return shots
    return clips_task(ctx, cfg.stages.clips, sources, shots)
