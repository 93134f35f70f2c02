"""Training functions the engine tests run in-process, in spawned processes and on Ray Train workers.

The tiny SkyReels-V2 DiT on tiny latents [B, 16, 3, 4, 4] with per-frame timesteps (diffusion forcing),
flow-matching loss (report Eq. 1-3). Global batches are fixed by seed; a rank of W takes rows
rank::W of each one, so the mean of the ranks' losses is the full batch's loss.
"""

from __future__ import annotations

import os

import torch

from infra.config_train import TrainConfig, TrainStageConfig

GLOBAL_BATCH = 4
FRAMES = 3
TEXT_LEN = 5



def engine_for(name: str, model, stage, cfg):
    """The training engine a worker config names (imported lazily: DeepSpeed is slow to import)."""
    if name == "plain":
        from tasks.train.lib.engine import PlainEngine

        return PlainEngine(model, stage)
    from tasks.train.lib.engine_deepspeed import DeepSpeedEngine

    return DeepSpeedEngine(model, stage, cfg)

def build_model(seed: int = 0) -> torch.nn.Module:
    from diffusers import SkyReelsV2Transformer3DModel

    from models.checkpoint import PROFILES

    torch.manual_seed(seed)
    # No fps injection: diffusers adds the fps term with a shape that only broadcasts for batch 1 under
    # per-frame timesteps (transformer_skyreels_v2.py, `.repeat(timestep.shape[1], 1, 1)`).
    return SkyReelsV2Transformer3DModel(**{**PROFILES["tiny"].transformer, "inject_sample_info": False})


def global_batch(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return {
        "latents": torch.randn(GLOBAL_BATCH, 16, FRAMES, 4, 4, generator=gen),
        "noise": torch.randn(GLOBAL_BATCH, 16, FRAMES, 4, 4, generator=gen),
        "t": torch.sigmoid(torch.randn(GLOBAL_BATCH, FRAMES, generator=gen)),  # logit-normal, per frame
        "text": torch.randn(GLOBAL_BATCH, TEXT_LEN, 32, generator=gen),
    }


def forward(module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Model output on x_t = t*x1 + (1-t)*x0 (x1 = data, x0 = noise; the report's Eq. 1 convention)."""
    t = batch["t"][:, None, :, None, None]
    x_t = t * batch["latents"] + (1 - t) * batch["noise"]
    return module(x_t, timestep=batch["t"] * 1000, encoder_hidden_states=batch["text"],
                  enable_diffusion_forcing=True, return_dict=False)[0]


def flow_loss(module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.nn.functional.mse_loss(forward(module, batch), batch["latents"] - batch["noise"])


def rank_slice(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    return {k: v[rank::world] for k, v in batch.items()}


def configs(engine: str, zero_stage: int = 0, steps: int = 5, sequence_parallel: int = 1):
    stage = TrainStageConfig(dataset="D", resolution="r", steps=steps, lr=1e-3, lr_end=5e-4, warmup_steps=2,
                             weight_decay=1e-2, grad_clip=0.05)  # clip that bites: clipping is part of the test
    return stage, TrainConfig(engine=engine, zero_stage=zero_stage, sequence_parallel=sequence_parallel)


def make_engine(engine: str, zero_stage: int, steps: int, sequence_parallel: int = 1, model=None):
    stage, train = configs(engine, zero_stage, steps, sequence_parallel)
    return engine_for(engine, model if model is not None else build_model(), stage, train)


def train(config: dict) -> dict:
    """Run ``config["steps"]`` steps; with ``resume_at`` k, save after step k, rebuild a fresh engine from a
    differently-seeded model, load, and continue. Returns per-step global losses, grad norms, lrs, weights."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    engine = make_engine(config["engine"], config.get("zero_stage", 0), config["steps"], config.get("sp", 1))
    history = {"loss": [], "grad_norm": [], "lr": []}
    for step in range(config["steps"]):
        batch = rank_slice(global_batch(step), getattr(engine, "data_rank", 0), getattr(engine, "data_world_size", 1))
        loss = flow_loss(engine.module, batch)
        stats = engine.step(loss)
        history["loss"].append(engine.all_reduce_mean(loss.item()))
        history["grad_norm"].append(stats.grad_norm)
        history["lr"].append(stats.lr)
        if step + 1 == config.get("resume_at"):
            engine.save(config["checkpoint_dir"])
            engine = make_engine(config["engine"], config.get("zero_stage", 0), config["steps"],
                                 config.get("sp", 1), model=build_model(seed=123))
            engine.load(config["checkpoint_dir"])
    weights = engine.full_state_dict()
    _close(engine)
    model = getattr(engine.module, "module", engine.module)  # the DS engine wraps the model
    return {**history, "weights": weights, "rank": engine.rank, "world_size": engine.world_size,
            "attention": type(model.blocks[0].attn1.processor).__name__, "pid": os.getpid()}


def _close(engine) -> None:
    if hasattr(engine, "close"):
        engine.close()


def trainer_loop(config: dict) -> list[float]:
    """reelflow's own training loop (tasks.train.lib.loop.train: bucketed batches, per-step noise, data-rank
    shards) on the tiny overfit set, with the engine named in ``config``; returns the per-step losses."""
    import tempfile

    from train_helpers import OverfitSet, stage_cfg

    from models.dit import without_fps_embedding
    from tasks.train.lib.loop import LoopSpec
    from tasks.train.lib.loop import train as train_loop

    torch.set_num_threads(1)
    cfg, stage = stage_cfg(config["steps"])
    cfg = cfg.model_copy(update={"engine": config["engine"], "zero_stage": config.get("zero_stage", 0)})
    from models.checkpoint import build_components

    model = without_fps_embedding(build_components("tiny")["transformer"])
    engine = engine_for(config["engine"], model, stage, cfg)
    with tempfile.TemporaryDirectory() as steps_dir:
        state = train_loop(engine, OverfitSet(), LoopSpec(stage, cfg, cfg.resolutions["256p"], steps_dir, 16))
    engine.close()
    return [row["loss"] for row in state.history]


class UnevenSet:
    """``n`` samples of one shape (one bucket) from the overfit set: batches of 4 over 5 or 7 samples leave a
    short last batch, shorter than 3 ranks for n = 5 (the data-parallel edge cases)."""

    def __init__(self, n: int):
        from train_helpers import OverfitSet

        self.items = OverfitSet(2 * n).items[::2]  # the even items: 3 latent frames each

    def buckets(self) -> dict[str, list[int]]:
        return {"f3": list(range(len(self.items)))}

    def get(self, i: int):
        return self.items[i]


def uneven_loop(config: dict) -> dict:
    """reelflow's training loop on ``UnevenSet(n)`` for each n in ``config["samples"]`` (batches of 4, so two
    epochs of short batches in ``steps`` steps), with the engine named in ``config``: per-step losses and final
    weights per sample count. One process group for all runs (built here when there are several ranks)."""
    import tempfile

    import torch.distributed as dist
    from train_helpers import stage_cfg

    from models.checkpoint import build_components
    from models.dit import without_fps_embedding
    from tasks.train.lib.loop import LoopSpec
    from tasks.train.lib.loop import train as train_loop

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    cfg, stage = stage_cfg(config["steps"])
    cfg = cfg.model_copy(update={"engine": config["engine"], "zero_stage": config.get("zero_stage", 0)})
    res = cfg.resolutions["256p"].model_copy(update={"max_batch": 4, "token_budget": 2**62})
    out = {}
    for n in config["samples"]:
        torch.manual_seed(0)
        model = without_fps_embedding(build_components("tiny")["transformer"])
        engine = engine_for(config["engine"], model, stage, cfg)
        with tempfile.TemporaryDirectory() as steps_dir:
            state = train_loop(engine, UnevenSet(n), LoopSpec(stage, cfg, res, steps_dir, 16))
        out[n] = {"loss": [row["loss"] for row in state.history], "batch": [row["batch"] for row in state.history],
                  "weights": engine.full_state_dict()}
        engine.close()
    if dist.is_initialized():
        dist.destroy_process_group()
    return out
