"""Stage distill-dmd (report section 3.5, issue 19 item 4) end to end on a tiny final checkpoint: it trains
the generator 1 update in 5, publishes a folder diffusers loads, registers it, measures it against the
teacher, and a stage killed after its first state checkpoint resumes to the very weights of an unbroken run."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pytest
import torch
from synthetic_pool import publish, stage_ctx

from infra.checkpoints import CHECKPOINT, checkpoint_dir
from infra.config import load_config
from infra.config_post import DMDConfig
from infra.config_train import TrainStageConfig
from infra.stage import run_stage
from models.checkpoint import init_checkpoint
from models.dit import load_transformer, without_fps_embedding, write_checkpoint
from models.generate_config import GenerateConfig
from tasks.generate.lib.generator import generate_video, preflight
from tasks.post import distill_dmd
from tasks.post.lib import dmd_train

torch.set_num_threads(2)
CAPTIONS = ["a man walks on a city street at night", "a red car drives fast", "a dog runs in the forest",
            "a woman smiles, close up", "slow pan over the sea at sunset"]
CFG = DMDConfig(iterations=10, fake_updates_per_generator=5, batch_size=1, prompts=3, eval_prompts=1, eval_seeds=1,
                teacher_steps=6, resolution="256p", frames=5, checkpoint_every=5, lr_generator=1e-3, lr_fake=1e-3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A run holding a final (sft-720p-like: diffusion forcing, no FPS embedding) checkpoint and a captioned
    dataset."""
    root = tmp_path_factory.mktemp("dmd")
    cfg = load_config("tiny", [f"storage.run_root={root / 'runs'}", f"state_dir={root / 'state'}"])
    ctx = stage_ctx(cfg, root, "dmd-test")
    base = init_checkpoint("tiny", str(root / "base"))

    def final_body(work):
        write_checkpoint(base, without_fps_embedding(load_transformer(base)), os.path.join(work.tmp_uri, CHECKPOINT),
                         "SkyReelsV2DiffusionForcingPipeline")
        return pa.table({"step": [1], "loss": [1.0]})

    final = run_stage(ctx, "sft-720p", TrainStageConfig(dataset="D_720p_sft", resolution="720p", steps=1, lr=1e-5),
                      [], final_body)
    n = len(CAPTIONS) + 1
    dataset = publish(ctx, pd.DataFrame({
        "clip_id": [f"c{i}" for i in range(n)], "error": [None] * (n - 1) + ["unreadable"],
        "caption_t2v": CAPTIONS + ["an error row"], "in_D_540p_sft": [True] * n}), "D_540p_sft")
    return {"root": root, "cfg": cfg, "ctx": ctx, "final": final, "dataset": dataset}


def _weights(folder: str) -> dict[str, torch.Tensor]:
    return load_transformer(folder).state_dict()


@pytest.mark.slow
def test_stage_distills_publishes_registers_and_measures(world):
    from diffusers import DiffusionPipeline

    ctx = world["ctx"]
    out = distill_dmd.run(ctx, CFG, world["cfg"].train, world["final"], world["dataset"])
    folder = checkpoint_dir(out)
    assert isinstance(DiffusionPipeline.from_pretrained(folder), DiffusionPipeline)
    teacher, generator = _weights(checkpoint_dir(world["final"])), _weights(folder)
    assert any(not torch.equal(teacher[k], generator[k]) for k in teacher)  # the generator was trained
    stats = out.stats
    assert stats["generator_updates"] == 2  # 10 fake-score updates, one generator update in 5
    assert stats["sigmas"] == pytest.approx(distill_dmd.dmd.generator_sigmas(4, 1.0))
    evaluation = stats["evaluation"]
    assert evaluation["samples"] == 1 and evaluation["speedup_sampling_cpu"] > 0  # speed: benchmarks/dmd.py
    assert 0 < evaluation["generator"]["latent_relative_l2"] < 10
    assert not set(stats["held_out_prompts"]) & set(stats["prompts"])
    version = ctx.tracker.client.get_model_version_by_alias(f"{ctx.cfg.tracking.experiment}-tiny-dmd", "distill-dmd")
    assert version.source == folder
    history = ctx.tracker.client.get_metric_history(version.run_id, "fake_loss")
    assert [m.step for m in history] == list(range(10))
    # the generation CLI's path samples it with its own few steps, unguided
    height, width = world["cfg"].train.resolutions["256p"].size(16 / 9)
    gen = GenerateConfig(prompt="a red car drives fast", num_frames=5, base_num_frames=5, height=height, width=width,
                         max_sequence_length=64)
    facts = generate_video(folder, gen, str(world["root"] / "dmd.mp4"))
    assert facts["sampler"] == "dmd" and facts["frames"] == 5
    with pytest.raises(ValueError, match="text-to-video only"):
        preflight(folder, gen, image="first-frame.png")
    # published: a rerun is skipped
    assert distill_dmd.run(ctx, CFG, world["cfg"].train, world["final"], world["dataset"]).fingerprint == out.fingerprint


@pytest.mark.slow
def test_a_stage_killed_after_its_first_checkpoint_resumes_to_the_same_weights(world, monkeypatch):
    args = (CFG, world["cfg"].train, world["final"], world["dataset"])
    ctx = stage_ctx(world["cfg"], world["root"] / "killed", "dmd-killed")
    real_save = dmd_train._save

    def save_then_die(state, uri):
        real_save(state, uri)
        raise KeyboardInterrupt("killed after the first state checkpoint")

    monkeypatch.setattr(dmd_train, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill_dmd.run(ctx, *args)
    monkeypatch.setattr(dmd_train, "_save", real_save)
    done = []
    monkeypatch.setattr(dmd_train, "iterate", lambda *a, **k: done.append(a[3]) or real_iterate(*a, **k))
    resumed = distill_dmd.run(ctx, *args)
    assert done == list(range(5, 10))  # only the iterations after the checkpoint ran again
    monkeypatch.undo()
    clean = distill_dmd.run(stage_ctx(world["cfg"], world["root"] / "clean", "dmd-clean"), *args)
    a, b = _weights(checkpoint_dir(resumed)), _weights(checkpoint_dir(clean))
    assert all(torch.equal(a[k], b[k]) for k in a)


real_iterate = dmd_train.iterate


def test_a_single_caption_is_learnt_and_measured_on(world, monkeypatch):
    # A tiny corpus may caption one clip only: the stage still runs, measured on that caption.
    monkeypatch.setattr(distill_dmd, "captions", lambda dataset, count, seed: [CAPTIONS[0]])
    ctx = stage_ctx(world["cfg"], world["root"] / "one", "dmd-one")
    cfg = CFG.model_copy(update={"iterations": 2, "teacher_steps": 2, "regression_pairs": 1})
    out = distill_dmd.run(ctx, cfg, world["cfg"].train, world["final"], world["dataset"])
    assert out.stats["evaluated_on_training_caption"] and out.stats["prompts"] == [CAPTIONS[0]]


def test_disabled_and_bad_settings(world):
    cfg = load_config("tiny", ["post.dmd.enabled=false"])
    assert cfg.post.dmd.enabled is False
    with pytest.raises(ValueError, match="4k\\+1"):
        distill_dmd.run(world["ctx"], CFG.model_copy(update={"frames": 6}), world["cfg"].train, world["final"],
                        world["dataset"])
