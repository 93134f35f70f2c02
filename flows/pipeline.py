"""The whole job, the report end to end: (synthetic corpus when no input) -> curation (3.1-3.2) ->
progressive pretraining + 540p SFT (3.3) -> pairs, reward model, Flow-DPO x3, diffusion forcing,
720p SFT (3.4) -> a long video from the final checkpoint -> distillation (the captioner, 3.2). ``until``
stops after any named stage; the job's result is the final video's manifest."""

from __future__ import annotations

from prefect import flow

from flows.curate import curate
from flows.distill import distill_flow
from flows.post_train import post_train_flow
from flows.pretrain import pretrain_flow
from flows.stages import stage_task, stops_in
from flows.summary import attach_prefect_logs, reported
from infra.config import PipelineConfig
from infra.manifest import Manifest
from infra.session import close_run, open_run
from tasks.corpus import corpus as corpus_stage

corpus_task = stage_task(corpus_stage.run, "corpus")


@flow(name="reelflow-pipeline", flow_run_name="{run_id}")
def pipeline(cfg: PipelineConfig, run_id: str, until: str | None = None, replay: str | None = None) -> Manifest:
    """The final video's manifest; with ``until``, the manifest of that stage (later phases do not run).

    ``replay``: run that stage again although it is published, on the published outputs of the stages
    before it (which are skipped as usual), and stop after it: one stage rerun alone on its saved inputs."""
    if replay and until not in (None, replay):
        raise ValueError(f"--replay {replay} stops after {replay}; drop --until {until}")
    until = replay or until
    attach_prefect_logs()
    ctx = open_run(cfg, run_id)
    ctx.replay = replay
    ok = False
    try:
        with reported(ctx, "pipeline"):
            result = _phases(ctx, cfg, run_id, until)
        ok = True
        return result
    finally:
        close_run(ctx, ok)


def _phases(ctx, cfg: PipelineConfig, run_id: str, until: str | None) -> Manifest:
    input_uri = cfg.input or corpus_task(ctx, cfg.corpus).uri
    curated = curate(cfg, run_id, input_uri, until)
    if stops_in("curate", until):
        return curated[until]
    datasets = {name: m for name, m in curated.items() if name.startswith("D_")}
    checkpoints = pretrain_flow(cfg, run_id, datasets, until)
    if stops_in("pretrain", until):
        return checkpoints[until]
    final = post_train_flow(cfg, run_id, datasets, checkpoints["sft-540p"], until)
    if stops_in("post-train", until):
        return final
    distilled = distill_flow(cfg, run_id, curated, until)
    return distilled[until] if until else final
