"""Generation phase (report sections 5.4-5.5): checkpoint + settings -> video, tracked in MLflow.

    video = Generate(checkpoint, prompt | story, [image], [end_image], [video], ar_step, causal_block_size, ...)

One Prefect task loads the checkpoint and generates; the MLflow run holds the settings as params, the
timings as metrics and the mp4 as an artifact.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from infra.config import PipelineConfig
from infra.session import tracker_for
from infra.tracking import git_sha
from models.generate_config import GenerateConfig
from tasks.generate.lib.generator import generate_video

generate_task = task(generate_video, name="generate", cache_policy=NO_CACHE, retries=0)


def mode_of(cfg: GenerateConfig, image: str | None, end_image: str | None, video: str | None) -> str:
    """A short name of what is being generated, e.g. 'i2v+end' or 'extend+story'."""
    parts = ["extend" if video else "i2v" if image else "t2v"] + ["end"] * bool(end_image)
    return "+".join(parts + ["story"] * (len(cfg.story) > 1))


@flow(name="generate", flow_run_name="generate-{gen.seed}")
def generate(cfg: PipelineConfig, checkpoint: str, gen: GenerateConfig, out: str, image: str | None = None,
             end_image: str | None = None, video: str | None = None, frames_out: str | None = None,
             progress: bool = True) -> dict:
    tracker = tracker_for(cfg)
    mode = mode_of(gen, image, end_image, video)
    run = tracker.client.create_run(tracker.experiment_id, run_name=f"generate-{mode}", tags={
        "reelflow.kind": "generate", "reelflow.stage": "generate", "reelflow.git_sha": git_sha(),
        "reelflow.profile": cfg.profile})
    rid, ok = run.info.run_id, False
    try:
        tracker.log_params(rid, {"checkpoint": checkpoint, "mode": mode, "image": image, "end_image": end_image,
                                 "video": video, **gen.model_dump(mode="json")})
        stats = generate_task(checkpoint, gen, out, image, end_image, video, frames_out, progress)
        tracker.log_metrics(rid, stats)
        tracker.log_artifact(rid, out, "video")
        ok = True
        return {**stats, "mlflow_run_id": rid}
    finally:
        tracker.end(rid, ok)
