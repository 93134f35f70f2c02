"""Engines and launchers (issue 5, "Engines"): DeepSpeed ZeRO on 2 CPU processes (gloo) against the
single-process PlainEngine, checkpoint round trips, Ulysses sequence parallel, Ray Train.

Each test judges what the workers returned (losses, grad norms, weights), which the launcher only
hands back once every worker wrote its result and exited cleanly.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from engine_workers import train

from infra.config_train import TrainConfig
from tasks.train.lib.launch import WorkerError, launch

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 5
# fp32 on CPU; the only differences are the order of the gradient sums (2 half-batch backward passes
# averaged by gloo vs one full-batch backward) and AdamW amplifying them a little each step.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True)
def _extensions_dir(monkeypatch):
    # DeepSpeed's CPU comm op (deepspeed_shm_comm) is JIT-built on first use (~1 min): keep it in the
    # checkout's state dir, built once and reused, never in ~/.cache. CI may point this elsewhere.
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        monkeypatch.setenv("TORCH_EXTENSIONS_DIR", os.path.join(_REPO, ".reelflow", "torch_extensions"))


def _two_processes(**config) -> dict:
    result = launch(train, {"engine": "deepspeed", "steps": STEPS, **config}, TrainConfig(num_workers=2))
    assert result["rank"] == 0 and result["world_size"] == 2
    return result


@pytest.fixture(scope="module")
def plain() -> dict:
    return launch(train, {"engine": "plain", "steps": STEPS}, TrainConfig())


@pytest.fixture(scope="module")
def zero2() -> dict:
    return _two_processes(zero_stage=2)


def _assert_weights_close(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=RTOL, atol=ATOL, msg=name)


def test_zero2_two_processes_match_single_process(plain, zero2):
    assert len(zero2["loss"]) == STEPS
    torch.testing.assert_close(torch.tensor(zero2["loss"]), torch.tensor(plain["loss"]), rtol=RTOL, atol=0)
    # Pre-clip global grad norm as DeepSpeed's ZeRO optimizer reports it (the test's clip of 0.05 bites).
    torch.testing.assert_close(torch.tensor(zero2["grad_norm"]), torch.tensor(plain["grad_norm"]), rtol=1e-4, atol=0)
    assert all(norm > 0.05 for norm in plain["grad_norm"])
    assert zero2["lr"] == pytest.approx(plain["lr"], rel=1e-12)
    _assert_weights_close(zero2["weights"], plain["weights"])


@pytest.mark.slow  # two more 2-process runs (~1-3 min on 2 shared cores)
def test_zero3_full_state_dict_equals_zero0(plain):
    zero3 = _two_processes(zero_stage=3)
    zero0 = _two_processes(zero_stage=0)
    torch.testing.assert_close(torch.tensor(zero3["loss"]), torch.tensor(zero0["loss"]), rtol=RTOL, atol=0)
    _assert_weights_close(zero3["weights"], zero0["weights"])
    _assert_weights_close(zero0["weights"], plain["weights"])


def test_deepspeed_save_load_continues_bit_exact(zero2, tmp_path):
    resumed = _two_processes(zero_stage=2, resume_at=2, checkpoint_dir=str(tmp_path))
    assert os.path.isdir(tmp_path / "engine")
    assert resumed["loss"] == zero2["loss"]  # steps 3..5 ran on a reloaded engine built from other weights
    for name, tensor in zero2["weights"].items():
        assert torch.equal(resumed["weights"][name], tensor), name


def test_plain_save_load_continues_bit_exact(plain, tmp_path):
    resumed = launch(train, {"engine": "plain", "steps": STEPS, "resume_at": 2, "checkpoint_dir": str(tmp_path)},
                     TrainConfig())
    assert resumed["loss"] == plain["loss"]


@pytest.mark.slow
def test_ulysses_sequence_parallel_matches_single_process(plain):
    # 2 ranks, one sequence-parallel group: both read the whole batch, each runs the blocks on half of the
    # tokens (attention over all of them through the all-to-alls); training follows the single-process run.
    sp = _two_processes(zero_stage=0, sp=2)
    assert sp["attention"] == "UlyssesAttnProcessor"
    torch.testing.assert_close(torch.tensor(sp["loss"]), torch.tensor(plain["loss"]), rtol=RTOL, atol=0)
    _assert_weights_close(sp["weights"], plain["weights"])


def _fails(config: dict) -> dict:
    raise ValueError(f"worker failed on purpose: {config['marker']}")


def test_worker_exception_surfaces_with_traceback():
    with pytest.raises(WorkerError, match="(?s)in _fails.*ValueError: worker failed on purpose: xyz"):
        launch(_fails, {"marker": "xyz"}, TrainConfig(num_workers=2))


@pytest.mark.slow
def test_ray_train_two_workers_return_rank0_result(plain, make_cfg, tmp_path):
    import engine_workers
    from ray import cloudpickle

    from infra.runtime import init_ray

    ray = init_ray(make_cfg())  # as a flow does: the caller owns Ray
    # tests/ is not importable on Ray workers (production train functions live in the installed package).
    cloudpickle.register_pickle_by_value(engine_workers)
    try:
        result = launch(train, {"engine": "deepspeed", "zero_stage": 2, "steps": STEPS},
                        TrainConfig(num_workers=2, ray_train=True), storage_path=str(tmp_path / "ray-train"))
    finally:
        ray.shutdown()
    assert result["rank"] == 0 and result["world_size"] == 2
    torch.testing.assert_close(torch.tensor(result["loss"]), torch.tensor(plain["loss"]), rtol=RTOL, atol=0)


def test_reelflow_loop_zero2_two_processes_matches_plain():
    """The trainer itself (not a hand loop) under DeepSpeed ZeRO-2 on 2 gloo processes: same losses as
    one process on the full batches (each rank takes half of every global batch, DS averages gradients)."""
    from engine_workers import trainer_loop

    single = launch(trainer_loop, {"engine": "plain", "steps": 4}, TrainConfig())
    double = launch(trainer_loop, {"engine": "deepspeed", "zero_stage": 2, "steps": 4}, TrainConfig(num_workers=2))
    assert double == pytest.approx(single, rel=1e-5)


@pytest.mark.parametrize("world", [2, 3])
def test_uneven_batches_match_single_process(world):
    """Sample counts that divide by neither the batch size (4) nor the world size: 5 samples -> batches of 4
    and 1 (the 1-sample batch is shorter than the world: padded ranks weigh 0), 7 -> 4 and 3. Every rank
    trains on a share of every batch, and losses and weights follow one process on the same batches."""
    from engine_workers import uneven_loop

    config = {"steps": 2, "samples": [5, 7]}  # one epoch: a full batch and the short one, in shuffled order
    single = launch(uneven_loop, {**config, "engine": "plain"}, TrainConfig())
    multi = launch(uneven_loop, {**config, "engine": "deepspeed", "zero_stage": 2}, TrainConfig(num_workers=world))
    for n in (5, 7):
        assert sorted(single[n]["batch"]) == [n - 4, 4]  # the short batch is trained on
        assert multi[n]["batch"] == single[n]["batch"]
        assert all(math.isfinite(loss) for loss in multi[n]["loss"])
        torch.testing.assert_close(torch.tensor(multi[n]["loss"]), torch.tensor(single[n]["loss"]), rtol=1e-5, atol=0)
        _assert_weights_close(multi[n]["weights"], single[n]["weights"])


def test_shard_rows_cover_each_batch_once():
    from tasks.train.lib.data import shard_rows

    for n in range(1, 9):
        for world in range(1, 5):
            shares = [shard_rows(n, rank, world) for rank in range(world)]
            assert all(rows for rows, _ in shares)  # no rank is ever handed an empty share
            real = sorted(r for rows, weight in shares if weight > 0 for r in rows)
            assert real == list(range(n))  # the weighted shares are disjoint and cover the batch
            # the engines average over ranks: sum of weight * share size / share size ... = world
            assert sum(weight for _, weight in shares) == pytest.approx(world)
    assert shard_rows(4, 0, 1) == ([0, 1, 2, 3], 1.0)
