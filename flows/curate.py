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

from prefect import flow

from flows.stages import Stages, UntilReached, stage_task
from flows.summary import attach_prefect_logs, reported
from infra.config import PipelineConfig
from infra.manifest import Manifest
from infra.session import open_run
from tasks.curate import balance, caption, clips, datasets, ingest, score, segment
from tasks.curate.lib import audit

ingest_task = stage_task(ingest.run, "ingest")
segment_task = stage_task(segment.run, "segment")
clips_task = stage_task(clips.run, "clips")
score_task = stage_task(score.run, "score")
caption_task = stage_task(caption.run, "caption")
dataset_task = stage_task(datasets.build_dataset, "dataset", "{name}")
balance_task = stage_task(balance.run, "concept-balance", "D_post")
gate_task = stage_task(audit.audit_gate, "audit-gate", "gate {gate}")


@flow(name="curate", flow_run_name="curate-{run_id}")
def curate(cfg: PipelineConfig, run_id: str, input_uri: str, until: str | None = None) -> dict[str, Manifest]:
    """Every stage's manifest by name, in order (the datasets among them); after the ``--until`` stage, what
    was built up to it."""
    attach_prefect_logs()
    ctx = open_run(cfg, run_id)
    stages, config = Stages("curate", until), cfg.stages

    def dataset(name: str, source: Manifest) -> Manifest:  # D = source.filter(profile), audited
        return gate_task(ctx, cfg.audit, name, dataset_task(ctx, cfg.datasets, name, source, cfg.audit))

    with reported(ctx, "curate"):
        try:
            sources = stages.run("ingest", ingest_task, ctx, config.ingest, input_uri)
            shots = stages.run("segment", segment_task, ctx, config.segment, sources)
            clip_table = stages.run("clips", clips_task, ctx, config.clips, sources, shots)
            scored = stages.run("score", score_task, ctx, config.score, clip_table)
            pool = stages.run("caption", caption_task, ctx, config.caption, scored)
            stages.run("D_256p", dataset, "D_256p", pool)
            stages.run("D_360p", dataset, "D_360p", pool)
            d_540p = stages.run("D_540p", dataset, "D_540p", pool)
            d_post = stages.run("D_post", balance_task, ctx, config.balance, d_540p)
            d_540p_sft = stages.run("D_540p_sft", dataset, "D_540p_sft", d_post)
            stages.run("D_720p_sft", dataset, "D_720p_sft", d_540p_sft)
        except UntilReached:
            pass  # stopped where asked: the flow itself succeeded
        return stages.done
