"""The whole report for real (Prefect, Ray, MLflow), small: curation -> latent caches -> pretrain-256p/360p/540p
-> sft-540p -> pairs -> reward -> dpo-1..3 -> forcing -> sft-720p -> a long diffusion-forcing video."""

from __future__ import annotations

import os

import av
import pytest
import torch

from infra import manifest as mf
from infra.checkpoints import checkpoint_dir
from infra.session import tracker_for

pytestmark = pytest.mark.slow
# Simulated audits (the manual filter behind D_720p_sft needs verdicts); on a 2-film corpus a gate's sample
# is a handful of clips, so the gates only record here (their pass/fail logic has tests/test_audit*.py).
SMALL = ("corpus.videos=2", "corpus.width=160", "corpus.height=90", "corpus.shots_per_video=[4,5]",
         "corpus.defect_rate=0", "audit.mode=simulated",
         *(f"audit.gates.{g}.max_bad_rate=1" for g in ("D_256p", "D_360p", "D_540p", "D_540p_sft", "D_720p_sft")))
TRAIN = ("pretrain-256p", "pretrain-360p", "pretrain-540p", "sft-540p")
POST_TRAIN = ("forcing", "sft-720p")
POST = ("post.pairs.dataset=D_540p", "post.pairs.max_clips=4", "post.pairs.human_prompts=2", "post.pairs.human_samples_per_prompt=2",
        "post.pairs.frames=9", "post.reward.steps=5", "post.dpo.prompts=1", "post.dpo.samples_per_prompt=2",
        "post.dpo.steps=2", "post.dpo.frames=9", "post.video.num_frames=33", "post.video.base_num_frames=17",
        "post.video.overlap_history=5", "post.video.steps=2",
        # the two distillations only have to run and register here (their measures: benchmarks/dmd.py,
        # benchmarks/captioner_distill.py); the fewest iterations that still train
        "post.dmd.iterations=5", "post.dmd.teacher_steps=4", "post.dmd.frames=9", "post.dmd.regression_pairs=1",
        "post.dmd.eval_prompts=1", "stages.captioner_distill.epochs=2", "stages.captioner_distill.max_clips=8")
# Curation's stages, each with its own MLflow child run, sample and (for the frame stages) contact sheet.
CURATION = ("corpus", "ingest", "segment", "clips", "score", "caption", "D_256p", "D_360p", "D_540p", "D_post",
            "D_540p_sft", "D_720p_sft")


@pytest.fixture(autouse=True)
def fresh_ray():
    import ray

    yield
    ray.shutdown()


def test_the_whole_report_then_resume(make_cfg):
    from diffusers import DiffusionPipeline, SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Pipeline

    from flows.pipeline import pipeline

    steps = [f"train.stages.{s}.steps=4" for s in TRAIN] + [f"train.stages.{s}.checkpoint_every=2" for s in TRAIN]
    steps += [f"train.stages.{s}.steps=2" for s in POST_TRAIN]
    cfg = make_cfg(*SMALL, *steps, *POST)
    result = pipeline(cfg, "pt")
    assert result.stage == "video"
    root = os.path.join(cfg.storage.run_root, "pt")
    _check_curation(cfg, root)
    published = {s: mf.load_success(os.path.join(root, s)) for s in TRAIN}
    for name, manifest in published.items():
        curve = mf.read_table(manifest)
        assert list(curve.step) == [1, 2, 3, 4] and curve.loss.notna().all(), name
        assert {"lr", "grad_norm", "samples_per_s", "tokens_per_s", "peak_memory_mb"} <= set(curve.columns)
    # each stage starts from the previous one and trains on its own dataset's cache
    assert published["pretrain-360p"].inputs[-1] == published["pretrain-256p"].fingerprint
    caches = {m.stage for m in (mf.load_success(os.path.join(root, d)) for d in os.listdir(root)
                                if d.startswith("latents-")) if m}
    assert caches == {"latents-D_256p-256p", "latents-D_360p-360p", "latents-D_540p-540p", "latents-D_540p_sft-540p",
                      "latents-D_720p_sft-720p", "latents-D_camera-720p"}  # forcing and sft-i2v reuse the sft-540p cache

    pre = DiffusionPipeline.from_pretrained(checkpoint_dir(published["pretrain-540p"]))
    sft = DiffusionPipeline.from_pretrained(checkpoint_dir(published["sft-540p"]))
    assert isinstance(pre, SkyReelsV2DiffusionForcingPipeline) and pre.transformer.config.inject_sample_info
    assert isinstance(sft, SkyReelsV2Pipeline) and not sft.transformer.config.inject_sample_info  # FPS embedding gone
    video = pre("a man walks", height=64, width=112, num_frames=9, base_num_frames=9, num_inference_steps=2,
                generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    assert video.shape == (9, 64, 112, 3)

    tracker = tracker_for(cfg)
    model = tracker.client.get_registered_model(f"{cfg.tracking.experiment}-tiny-dit")
    assert set(model.aliases) == set(TRAIN) | {"dpo-1", "dpo-2", "dpo-3"} | set(POST_TRAIN) | {"newest"}
    assert model.aliases["newest"] == model.aliases["sft-720p"]  # the last stage registered
    assert "reward" in tracker.client.get_registered_model(f"{cfg.tracking.experiment}-tiny-reward").aliases
    for kind, stage in (("i2v", "sft-i2v"), ("camera", "sft-camera")):  # models of their own (report 5.5)
        assert stage in tracker.client.get_registered_model(f"{cfg.tracking.experiment}-tiny-{kind}").aliases
    assert "captioner-distill" in tracker.client.get_registered_model(f"{cfg.tracking.experiment}-tiny-captioner").aliases
    parent = tracker.find_parent("pt")
    children = tracker.client.search_runs([tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    by_stage = {r.data.tags["reelflow.stage"]: r for r in children}
    assert {*CURATION, *TRAIN, "pairs", "reward", "dpo-1", "dpo-2", "dpo-3", *POST_TRAIN, "distill-dmd", "video",
            "captioner-distill"} <= set(by_stage)
    for stage in CURATION:
        run, manifest = by_stage[stage], mf.load_success(os.path.join(root, stage))
        assert run.info.status == "FINISHED" and run.data.metrics["rows"] == manifest.row_count, stage
        assert run.data.tags["reelflow.run_id"] == "pt" and "reelflow.git_sha" in run.data.tags
        names = {a.path for a in tracker.client.list_artifacts(run.info.run_id)}
        assert {"_SUCCESS.json", "sample.csv"} <= names, stage
        if stage in ("ingest", "segment", "clips"):
            assert "contact_sheet.png" in names, stage
    segment = by_stage["segment"].inputs.dataset_inputs[0].dataset.digest
    assert segment == mf.load_success(os.path.join(root, "ingest")).fingerprint
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    final = DiffusionPipeline.from_pretrained(checkpoint_dir(published_post := mf.load_success(os.path.join(root, "sft-720p"))))
    assert isinstance(final, SkyReelsV2DiffusionForcingPipeline) and published_post.stats["final_loss"] > 0
    video = mf.read_table(result).iloc[0]
    with av.open(video.video_uri) as container:
        assert sum(1 for _ in container.decode(video=0)) == 33  # 33 frames: more than one 17-frame window
    version = tracker.client.get_model_version_by_alias(model.name, "sft-540p")
    assert version.source == checkpoint_dir(published["sft-540p"])
    run = tracker.client.get_run(version.run_id)
    assert run.data.tags["reelflow.stage"] == "sft-540p"
    history = tracker.client.get_metric_history(version.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert any(a.path.endswith(".mp4") for a in tracker.client.list_artifacts(version.run_id))

    before = {s: mf.load_success(os.path.join(root, s)) for s in CURATION}
    again = pipeline(cfg, "pt")  # rerun: every stage skipped, no new model version
    assert again == result
    assert {s: mf.load_success(os.path.join(root, s)) for s in CURATION} == before
    assert tracker.client.get_model_version_by_alias(model.name, "sft-540p").version == version.version


def _check_curation(cfg, root: str) -> None:
    """Every curation stage published; clips are real mp4 files with the frames their rows say."""
    missing = [s for s in CURATION if mf.load_success(os.path.join(root, s)) is None]
    assert not missing, f"not published: {missing}"
    clips = mf.read_table(mf.load_success(os.path.join(root, "clips")))
    for column in ("clip_id", "source_id", "source_uri", "start_frame", "end_frame", "fps", "width",
                   "height", "num_frames", "clip_uri", "error"):
        assert column in clips.columns
    good = clips[clips.error.isna()]
    assert len(good) >= 4 and good.clip_id.is_unique
    for row in good.head(3).itertuples():
        with av.open(row.clip_uri) as container:
            assert sum(1 for _ in container.decode(video=0)) == row.num_frames == row.end_frame - row.start_frame
