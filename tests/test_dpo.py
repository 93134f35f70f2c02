"""Flow-DPO rounds (report section 3.4.1, Eq. 4; issue 7): the pair objective on a tiny DiT, the sampler's
latent space, and stage dpo-k end to end on a tiny SFT-like checkpoint with a tiny reward model: the margin
rises, the reference stays frozen, the checkpoint loads in diffusers, a crash mid-round resumes bit-exact."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from synthetic_pool import publish, stage_ctx

from infra.checkpoints import CHECKPOINT, checkpoint_dir
from infra.config import load_config
from infra.config_post import DPOConfig, RewardConfig
from infra.config_train import TrainStageConfig
from infra.manifest import read_table
from infra.stage import run_stage
from models.checkpoint import init_checkpoint
from models.dit import load_transformer, without_fps_embedding, write_checkpoint
from models.reward_model import build_tiny_reward_model
from tasks.post import dpo
from tasks.post.reward import MODEL_DIR
from tasks.train.lib.objective_dpo import FlowDPO, Pair, PairCache, measure_margin

CAPTIONS = ["a man walks on a city street at night", "a red car drives fast", "a dog runs in the forest",
            "a woman smiles, close up", "slow pan over the sea at sunset"]
ROUND = DPOConfig(prompts=2, samples_per_prompt=3, steps=6, batch_size=2, resolution="256p", frames=5,
                  sample_steps=2, checkpoint_every=2, margin_draws=2, lr=1e-4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A run with the three inputs of a round: an SFT-like checkpoint (FPS embedding removed, published by a
    fake training stage), a reward stage (a tiny random reward model in its folder) and a captioned dataset."""
    root = tmp_path_factory.mktemp("dpo")
    cfg = load_config("tiny", [f"storage.run_root={root / 'runs'}", f"state_dir={root / 'state'}"])
    ctx = stage_ctx(cfg, root, "dpo-test")
    base = init_checkpoint("tiny", str(root / "base"))

    def sft_body(work):
        write_checkpoint(base, without_fps_embedding(load_transformer(base)), os.path.join(work.tmp_uri, CHECKPOINT))
        return pa.table({"step": [1], "loss": [1.0]})

    sft = run_stage(ctx, "sft-540p", TrainStageConfig(dataset="D_540p_sft", resolution="540p", steps=1, lr=1e-5),
                    [], sft_body)
    n = len(CAPTIONS) + 1
    dataset = publish(ctx, pd.DataFrame({
        "clip_id": [f"c{i}" for i in range(n)], "error": [None] * (n - 1) + ["unreadable"],
        "caption_t2v": CAPTIONS + ["an error row"], "in_D_540p_sft": [True] * (n - 2) + [False, True]}), "D_540p_sft")

    def reward_body(work):
        build_tiny_reward_model(str(root / "rm")).save(os.path.join(work.tmp_uri, MODEL_DIR))
        return pa.table({"pair_id": ["p0"]})

    reward = run_stage(ctx, "reward", RewardConfig(steps=1), [], reward_body)
    return {"root": root, "cfg": cfg, "ctx": ctx, "base": base, "sft": sft, "dataset": dataset, "reward": reward}


def _pairs(n: int = 3, seed: int = 0) -> PairCache:
    gen = torch.Generator().manual_seed(seed)
    return PairCache([Pair(torch.randn(16, 2, 4, 4, generator=gen), torch.randn(16, 2, 4, 4, generator=gen),
                           torch.randn(3 + i, 32, generator=gen), 24) for i in range(n)])


def test_pair_batches_collate_and_shard():
    cache = _pairs(3)
    batch = cache.collate([cache.get(i) for i in range(3)], text_len=8)
    assert batch.chosen.shape == batch.rejected.shape == (3, 16, 2, 4, 4) and batch.text.shape == (3, 8, 32)
    assert torch.equal(batch.text[1, :4], cache.get(1).text) and not batch.text[1, 4:].any()
    assert batch.tokens == 2 * 3 * (2 * 2 * 2) and batch.fps.tolist() == [1, 1, 1]
    half = batch.shard(1, 2)
    assert torch.equal(half.rejected, batch.rejected[1::2]) and half.tokens == batch.tokens // 2
    assert cache.buckets() == {"pairs": [0, 1, 2]}


def test_objective_at_the_reference_is_log2_and_measures_reproducibly(world):
    cfg = world["cfg"].train
    policy = without_fps_embedding(load_transformer(checkpoint_dir(world["sft"])))
    objective = FlowDPO(load_transformer(checkpoint_dir(world["sft"])), cfg, beta=500.0)
    cache = _pairs(3)
    batch = cache.collate([cache.get(i) for i in range(3)], 8)
    x0, t = objective.noise(0, 5, batch)
    again = objective.noise(0, 5, batch)
    assert torch.equal(x0, again[0]) and torch.equal(t, again[1]) and t.shape == (3,)  # one t per pair
    loss, metrics = objective.loss(policy, batch, x0, t, autocast=False)
    assert loss.item() == pytest.approx(math.log(2)) and metrics["implicit_reward_margin"] == 0
    assert not any(p.requires_grad for p in objective.reference.parameters())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    first = measure_margin(policy, objective, cache, text_len=8, batch_size=2, draws=2, seed=3)
    assert first == measure_margin(policy, objective, cache, text_len=8, batch_size=2, draws=2, seed=3)
    assert first["implicit_reward_margin"] == 0 and first["loss"] == pytest.approx(math.log(2))


def test_prompts_are_seeded_per_round_and_skip_other_rows(world):
    cfg = DPOConfig(prompts=3)
    first = dpo.choose_prompts(world["dataset"], cfg, 1)
    assert first == dpo.choose_prompts(world["dataset"], cfg, 1) and len(set(first)) == 3
    assert set(first) <= set(CAPTIONS[:-1])  # not the row outside the dataset, not the error row
    assert any(dpo.choose_prompts(world["dataset"], cfg, r) != first for r in (2, 3))
    assert len({dpo.sample_seed(0, r, p, k) for r in (1, 2) for p in range(3) for k in range(8)}) == 48


def test_kept_latents_are_what_the_pipeline_decodes(world):
    """output_type="latent" is the trainer's normalised space: our decode equals the pipeline's own."""
    from diffusers import SkyReelsV2Pipeline

    init = checkpoint_dir(world["sft"])
    generator = dpo.Generator(init, ROUND, 32, 48)
    dit = load_transformer(init)
    latents, frames = generator(dit, CAPTIONS[0], [7, 8])
    assert latents.shape == (2, 16, 2, 4, 6) and frames.shape == (2, 5, 32, 48, 3) and frames.dtype == np.uint8
    pipe = SkyReelsV2Pipeline(transformer=dit, **generator.parts)
    reference = pipe(CAPTIONS[0], height=32, width=48, num_frames=5, num_inference_steps=2, guidance_scale=5.0,
                     generator=torch.Generator().manual_seed(8), output_type="np").frames[0]
    assert np.abs(frames[1].astype(int) - (np.clip(reference, 0, 1) * 255).round().astype(int)).max() <= 1


def test_a_dit_with_the_fps_embedding_samples_through_the_df_pipeline_and_trains(world):
    """Before the SFT drops it, the DiT takes the FPS embedding: the DF pipeline samples, the loss feeds fps."""
    dit = load_transformer(world["base"])
    latents, frames = dpo.Generator(world["base"], ROUND, 32, 48)(dit, CAPTIONS[1], [1, 2])
    assert dit.config.inject_sample_info and latents.shape == (2, 16, 2, 4, 6) and frames.shape == (2, 5, 32, 48, 3)
    cache = PairCache([Pair(latents[0], latents[1], torch.randn(4, 32), 24)] * 2)
    batch = cache.collate(cache.pairs, 8)
    objective = FlowDPO(load_transformer(world["base"]), world["cfg"].train, beta=500.0)
    loss, metrics = objective.loss(dit, batch, *objective.noise(0, 0, batch), autocast=False)
    assert loss.item() == pytest.approx(math.log(2)) and metrics["accuracy"] == 0


def _weights(path: str) -> dict[str, torch.Tensor]:
    return load_transformer(path).state_dict()


@pytest.mark.slow
def test_one_round_raises_the_margin_keeps_the_reference_and_publishes(world, monkeypatch):
    from diffusers import DiffusionPipeline

    objectives = []

    class Recording(FlowDPO):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            objectives.append(self)

    monkeypatch.setattr(dpo, "FlowDPO", Recording)
    ctx, init = world["ctx"], world["sft"]
    out = dpo.run(ctx, ROUND, 1, init, world["reward"], world["dataset"])
    stats = out.stats
    assert stats["margin_start"] == 0 and stats["margin_end"] > stats["margin_start"]
    assert stats["margin_last_step"] > stats["margin_first_step"] == 0
    assert stats["steps"] == ROUND.steps == out.row_count and stats["pairs"] == ROUND.prompts
    assert all(c != r for c, r in zip(stats["chosen"], stats["rejected"], strict=True))
    assert stats["rm_score_chosen"] >= stats["rm_score_rejected"]
    assert np.isfinite([stats["rm_score_before"], stats["rm_score_after"]]).all()
    # the reference is the round's starting DiT, untouched by training; the policy moved
    start = _weights(checkpoint_dir(init))
    reference = objectives[0].reference.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in start.items())
    trained = _weights(checkpoint_dir(out))
    assert any(not torch.equal(trained[k], v) for k, v in start.items())
    # published like a training stage: diffusers loads it, the next round finds it, the alias is registered
    pipe = DiffusionPipeline.from_pretrained(checkpoint_dir(out), dtype=torch.float32)
    assert type(pipe).__name__ == "SkyReelsV2Pipeline" and not pipe.transformer.config.inject_sample_info
    version = ctx.tracker.client.get_model_version_by_alias(f"{ctx.cfg.tracking.experiment}-tiny-dit", "dpo-1")
    assert version.source == checkpoint_dir(out)
    history = ctx.tracker.client.get_metric_history(version.run_id, "implicit_reward_margin")
    assert [m.step for m in history] == list(range(1, ROUND.steps + 1))
    assert dpo.run(ctx, ROUND, 1, init, world["reward"], world["dataset"]).fingerprint == out.fingerprint  # skipped


@pytest.mark.slow
def test_a_round_killed_mid_training_resumes_on_the_same_pairs(world, monkeypatch):
    from tasks.train.lib import loop

    class Killed(Exception):
        pass

    save = loop.ckpt.save

    def save_then_die(steps_dir, state, *args, **kwargs):
        path = save(steps_dir, state, *args, **kwargs)
        if state.step == 2:
            raise Killed
        return path

    ctx = stage_ctx(world["cfg"], world["root"] / "crash", "dpo-crash")
    inputs = (world["sft"], world["reward"], world["dataset"])
    monkeypatch.setattr(loop.ckpt, "save", save_then_die)
    with pytest.raises(Killed):
        dpo.run(ctx, ROUND, 1, *inputs)
    monkeypatch.setattr(loop.ckpt, "save", save)
    assert not os.path.exists(ctx.stage_uri("dpo-1"))  # nothing published
    calls, generate = [], dpo.generate_and_score

    def counting(*args, **kwargs):
        calls.append(1)
        return generate(*args, **kwargs)

    steps, loss = [], FlowDPO.loss

    def counting_steps(self, *args, **kwargs):
        steps.append(1)
        return loss(self, *args, **kwargs)

    monkeypatch.setattr(dpo, "generate_and_score", counting)
    monkeypatch.setattr(FlowDPO, "loss", counting_steps)
    resumed = dpo.run(ctx, ROUND, 1, *inputs)
    assert len(calls) == 1  # only the "after" samples: the round's pairs came back from the step folder
    assert len(steps) == ROUND.steps - 2  # training went on from the step-2 checkpoint
    # the uninterrupted run of the same round (test above, or run now) gives the same curve and weights
    clean = dpo.run(stage_ctx(world["cfg"], world["root"] / "clean", "dpo-clean"), ROUND, 1, *inputs)
    assert resumed.stats["margin_end"] == clean.stats["margin_end"]
    assert resumed.stats["rm_score_after"] == clean.stats["rm_score_after"]
    assert read_table(resumed)["loss"].tolist() == read_table(clean)["loss"].tolist()
    ours, theirs = _weights(checkpoint_dir(resumed)), _weights(checkpoint_dir(clean))
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)



@pytest.mark.slow
def test_a_round_trains_through_the_deepspeed_engine(world):
    """train.engine=deepspeed (the cluster and GPU profiles): the engine's module is DeepSpeed's wrapper, whose
    `.config` is its own dict; margins and samples are taken on the DiT it wraps."""
    import dataclasses

    ctx = world["ctx"]
    deep = dataclasses.replace(ctx, cfg=ctx.cfg.model_copy(
        update={"train": ctx.cfg.train.model_copy(update={"engine": "deepspeed", "zero_stage": 2})}))
    out = dpo.run(deep, ROUND.model_copy(update={"steps": 2}), 1, world["sft"], world["reward"], world["dataset"])
    assert out.stats["steps"] == 2 and out.stats["margin_end"] > out.stats["margin_start"]
    start, trained = _weights(checkpoint_dir(world["sft"])), _weights(checkpoint_dir(out))
    assert any(not torch.equal(trained[k], v) for k, v in start.items())
