"""Curation phase (report section 3.1), as the report's pseudocode reads:

    shots = ShotSegmentation(D_raw, detector=[PySceneDetect, TransNetV2])
    pool  = HierarchicalCaptioning(BasicFilter(shots))   # filters add scores, captions add columns
    D_256p = pool.filter(loose); D_360p = pool.filter(medium); D_540p = pool.filter(strict)
    D_post = ConceptBalance(D_540p); D_540p_sft = QualityFilter(D_post)
    D_720p_sft = ManualFilter(D_540p_sft)                # every clip reviewed, Good ones kept
    each dataset gated by a human bad-case audit

One Prefect task per stage; inside a stage, Ray Data fans out over videos / clips.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.summary import attach_prefect_logs, reported
from infra.config import STAGE_ORDER, PipelineConfig
from infra.manifest import Manifest
from infra.session import open_run
from tasks.curate import balance, caption, clips, datasets, ingest, score, segment
from tasks.curate.lib import audit


def stage_task(fn, name: str, run_name: str | None = None):
    """A stage as one Prefect task: retries/caching are ours (resume by _SUCCESS.json). ``run_name`` (a format
    string over the stage function's parameters) names each task run after the stage it runs: ``dpo-1``, not
    Prefect's ``dpo-e12``."""
    return task(fn, name=name, task_run_name=run_name or name, cache_policy=NO_CACHE, retries=0)


ingest_task = stage_task(ingest.run, "ingest")
segment_task = stage_task(segment.run, "segment")
clips_task = stage_task(clips.run, "clips")
score_task = stage_task(score.run, "score")
caption_task = stage_task(caption.run, "caption")
dataset_task = stage_task(datasets.build_dataset, "dataset", "{name}")
balance_task = stage_task(balance.run, "concept-balance", "D_post")
gate_task = stage_task(audit.audit_gate, "audit-gate", "gate {gate}")


class UntilReached(Exception):
    """Raised after the stage named by ``--until``; carries that stage's manifest."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest


def checkpoint(until: str | None, name: str, manifest: Manifest) -> Manifest:
    if until in STAGE_ORDER and STAGE_ORDER.index(until) <= STAGE_ORDER.index(name):  # later phases: run on
        raise UntilReached(manifest)
    return manifest


@flow(name="curate", flow_run_name="curate-{run_id}")
def curate(cfg: PipelineConfig, run_id: str, input_uri: str, until: str | None = None) -> dict[str, Manifest]:
    """Every dataset by name, in order; after the ``--until`` stage, what was built up to it (last)."""
    attach_prefect_logs()
    ctx = open_run(cfg, run_id)
    stages = cfg.stages
    out: dict[str, Manifest] = {}

    def dataset(name: str, source: Manifest) -> Manifest:  # D = source.filter(profile), audited
        built = dataset_task(ctx, cfg.datasets, name, source, cfg.audit)
        out[name] = checkpoint(until, name, gate_task(ctx, cfg.audit, name, built))
        return out[name]

    with reported(ctx, "curate"):
        try:
            sources = checkpoint(until, "ingest", ingest_task(ctx, stages.ingest, input_uri))
            shots = checkpoint(until, "segment", segment_task(ctx, stages.segment, sources))
            clip_table = checkpoint(until, "clips", clips_task(ctx, stages.clips, sources, shots))
            scored = checkpoint(until, "score", score_task(ctx, stages.score, clip_table))
            pool = checkpoint(until, "caption", caption_task(ctx, stages.caption, scored))
            dataset("D_256p", pool)
            dataset("D_360p", pool)
            d_540p = dataset("D_540p", pool)
            d_post = checkpoint(until, "D_post", balance_task(ctx, stages.balance, d_540p))
            d_540p_sft = dataset("D_540p_sft", d_post)
            dataset("D_720p_sft", d_540p_sft)
        except UntilReached as reached:
            out.pop(reached.manifest.stage, None)
            out[reached.manifest.stage] = reached.manifest
        return out
