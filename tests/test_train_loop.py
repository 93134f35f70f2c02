"""The trainer on a tiny overfit set: Eq. 1-3 against diffusers' convention, golden loss curve, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import OverfitSet, stage_cfg

from models import flow_matching as fm
from models.checkpoint import build_components
from tasks.train.lib.data import Position, batch_stream, bucket_batch_size
from tasks.train.lib.engine import PlainEngine
from tasks.train.lib.loop import LoopSpec, forward_loss, step_noise, train

GOLDEN = Path(__file__).parent / "golden" / "train_loss_tiny.json"
ROOT = Path(__file__).resolve().parent.parent


def test_flow_matching_equations_match_diffusers_euler_step():
    """Eq. 1-3 in the report's time, checked against diffusers' flow-matching Euler scheduler: a perfect
    model output (the velocity toward the noise, as diffusers' DiTs predict) steps x_t back to x_1."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    gen = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(2, 16, 3, 4, 4, generator=gen), torch.randn(2, 16, 3, 4, 4, generator=gen)
    t = torch.tensor([0.3, 0.3])
    xt = fm.interpolate(x1, x0, t)
    torch.testing.assert_close(xt, 0.3 * x1 + 0.7 * x0)  # Eq. 1
    torch.testing.assert_close(fm.velocity(x1, x0), x1 - x0)  # Eq. 2
    perfect = x0 - x1  # what the DiT outputs for the report's u = x1 - x0
    assert fm.loss(perfect, x1, x0).item() == pytest.approx(0.0, abs=1e-12)  # Eq. 3
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sched.set_timesteps(sigmas=[0.7])  # sigma = 1 - t; the scheduler appends the final sigma 0
    assert sched.timesteps[0].item() == pytest.approx(fm.model_timestep(t)[0].item(), rel=1e-5)
    stepped = sched.step(perfect, sched.timesteps[0], xt).prev_sample
    torch.testing.assert_close(stepped, x1, rtol=1e-5, atol=1e-5)


def test_per_frame_t_broadcasts_over_frames():
    x1, x0 = torch.ones(1, 2, 3, 1, 1), torch.zeros(1, 2, 3, 1, 1)
    xt = fm.interpolate(x1, x0, torch.tensor([[0.1, 0.5, 0.9]]))
    assert xt[0, 0, :, 0, 0].tolist() == pytest.approx([0.1, 0.5, 0.9])


def test_logit_normal_t_is_reproducible_and_in_range():
    a = fm.sample_t(1000, torch.Generator().manual_seed(3))
    b = fm.sample_t(1000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and 0 < a.min() and a.max() < 1
    assert abs(a.mean().item() - 0.5) < 0.03  # symmetric around 1/2 for mean 0


def test_bucketed_stream_is_a_function_of_seed_and_position():
    buckets = {"a": list(range(5)), "b": list(range(5, 8))}
    sizes = {"a": 2, "b": 3}
    stream = batch_stream(buckets, sizes, seed=1)
    full = [next(stream)[1] for _ in range(7)]
    pos, _ = next(iter(batch_stream(buckets, sizes, seed=1)))
    resumed = batch_stream(buckets, sizes, seed=1, start=pos)
    rest = [next(resumed)[1] for _ in range(6)]
    assert rest == full[1:]
    for batch in full:
        assert len({i < 5 for i in batch}) == 1  # one bucket per batch
    assert sorted(i for b in full[:4] for i in b) == list(range(8))  # an epoch (3 + 1 batches) covers each once


def test_bucket_batch_size_follows_token_budget():
    _, stage = stage_cfg()
    cfg, _ = stage_cfg()
    res = cfg.resolutions["256p"]  # token_budget 1024, max_batch 8
    assert bucket_batch_size(512, res) == 2
    assert bucket_batch_size(32, res) == 8
    assert bucket_batch_size(512, res, world_size=4) == 4


def _run(steps: int, steps_dir: str, **update):
    # One intra-op thread: a parallel reduction's split may differ run to run, and bit-exactness is
    # promised for a fixed configuration (seed, threads, hardware).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg, stage = stage_cfg(steps, **update)
        model = build_components("tiny")["transformer"]
        return train(PlainEngine(model, stage), OverfitSet(), LoopSpec(stage, cfg, cfg.resolutions["256p"], steps_dir, 16))
    finally:
        torch.set_num_threads(threads)


def _eval_loss(model) -> float:
    """Loss at fixed noise and t over the whole set (deterministic; what 'the model fits' means)."""
    data = OverfitSet()
    from tasks.train.lib.data import collate

    total = 0.0
    with torch.no_grad():
        for idx in data.buckets().values():
            batch = collate([data.get(i) for i in idx], 16)
            for step in range(4):
                x0, t = step_noise(123, step, batch.latents, stage_cfg()[0])
                total += forward_loss(model, batch, x0, t, autocast=False).item()
    return total


def test_loss_decreases_and_matches_golden_curve(tmp_path):
    cfg, stage = stage_cfg(60)
    model = build_components("tiny")["transformer"]
    before = _eval_loss(model)
    state = train(PlainEngine(model, stage), OverfitSet(), LoopSpec(stage, cfg, cfg.resolutions["256p"], str(tmp_path), 16))
    after = _eval_loss(model)
    assert after < 0.8 * before, (before, after)
    losses = [row["loss"] for row in state.history]
    if os.environ.get("REELFLOW_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"steps": 60, "lr": 1e-3, "loss": losses}, indent=1))
    golden = json.loads(GOLDEN.read_text())["loss"]
    # CPU fp32; kernels may differ by last bits across CPUs, so a small relative tolerance.
    assert losses == pytest.approx(golden, rel=2e-3)


def test_resume_after_kill_reproduces_the_loss_curve_bit_exactly(tmp_path):
    """kill -9 after step 7 (last checkpoint at step 5) and resume: the same curve, bit for bit."""
    reference = [r["loss"] for r in _run(12, str(tmp_path / "ref")).history]
    killed = tmp_path / "killed"
    script = (
        "import os, signal, sys; sys.path.insert(0, 'tests')\n"
        "import torch; torch.set_num_threads(1)\n"
        "from test_train_loop import _run\n"
        "from tasks.train.lib import loop\n"
        "orig = loop.train\n"
        "def die(row):\n"
        "    if row['step'] == 7: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"from train_helpers import OverfitSet, stage_cfg\n"
        "from models.checkpoint import build_components\n"
        "from tasks.train.lib.engine import PlainEngine\n"
        "cfg, stage = stage_cfg(12)\n"
        "m = build_components('tiny')['transformer']\n"
        f"loop.train(PlainEngine(m, stage), OverfitSet(), loop.LoopSpec(stage, cfg, cfg.resolutions['256p'], {str(killed)!r}, 16), on_step=die)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert sorted(os.listdir(killed)) == ["step-00000005"]  # nothing half-written, step 6-7 lost
    resumed = _run(12, str(killed))
    assert [r["loss"] for r in resumed.history] == reference


def test_step_checkpoints_keep_the_last_n(tmp_path):
    _run(12, str(tmp_path), checkpoint_every=2)
    assert sorted(os.listdir(tmp_path)) == ["step-00000010", "step-00000012"]
    assert Position(**json.loads((tmp_path / "step-00000012" / "state.json").read_text())["position"]).index >= 0


def test_diffusion_forcing_objective_uses_non_decreasing_noise_per_frame(tmp_path):
    from models.dit import without_fps_embedding
    from tasks.train.lib.data import collate
    from tasks.train.lib.objective_forcing import DiffusionForcing

    cfg, stage = stage_cfg(6, objective="diffusion_forcing", fps_embedding=False)
    data = OverfitSet()
    batch = collate([data.get(0), data.get(2)], 16)  # the 3-frame bucket
    objective = DiffusionForcing(cfg)
    x0, t = objective.noise(0, 0, batch)
    assert t.shape == (2, 3) and x0.shape == batch.latents.shape
    assert (t[:, 1:] <= t[:, :-1]).all() and (t > 0).all() and (t < 1).all()  # later frames noisier
    torch.testing.assert_close(objective.noise(0, 0, batch)[1], t)  # a function of (seed, step)
    model = without_fps_embedding(build_components("tiny")["transformer"])
    model._set_ar_attention(1)  # block-causal attention while training
    state = train(PlainEngine(model, stage), data, LoopSpec(stage, cfg, cfg.resolutions["256p"], str(tmp_path), 16),
                  objective=objective)
    assert len(state.history) == 6 and all(math.isfinite(r["loss"]) for r in state.history)


def test_ema_weights_are_the_running_average(tmp_path):
    cfg, stage = stage_cfg(3, ema_decay=0.5)
    model = build_components("tiny")["transformer"]
    seen = []
    engine = PlainEngine(model, stage)
    orig = engine.full_state_dict
    engine.full_state_dict = lambda: seen.append(orig()) or seen[-1]
    state = train(engine, OverfitSet(), LoopSpec(stage, cfg, cfg.resolutions["256p"], str(tmp_path), 16))
    key = "proj_out.weight"
    expected = seen[0][key]
    for weights in seen[1:]:
        expected = 0.5 * expected + 0.5 * weights[key]
    torch.testing.assert_close(state.ema[key], expected)
    assert not torch.equal(state.ema[key], seen[-1][key])


def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    cfg, stage = stage_cfg(3)
    plain = build_components("tiny")["transformer"]
    ckpt = build_components("tiny")["transformer"]
    ckpt.enable_gradient_checkpointing()
    spec = LoopSpec(stage, cfg, cfg.resolutions["256p"], str(tmp_path / "a"), 16)
    a = [r["loss"] for r in train(PlainEngine(plain, stage), OverfitSet(), spec).history]
    spec = LoopSpec(stage, cfg, cfg.resolutions["256p"], str(tmp_path / "b"), 16)
    b = [r["loss"] for r in train(PlainEngine(ckpt, stage), OverfitSet(), spec).history]
    assert b == pytest.approx(a, rel=1e-5)
