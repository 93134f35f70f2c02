"""Engines: who owns the optimizer step. One protocol, two implementations.

``PlainEngine`` is a single process (tiny profile, unit tests, the benchmark's reference);
``tasks.train.lib.engine_deepspeed.DeepSpeedEngine`` wraps ``deepspeed.initialize`` (ZeRO 0-3; gloo on
CPU, NCCL on GPU). The training loop only talks to this protocol, so it never forks on the engine.
The model is a plain ``nn.Module``; parallelism is applied to it by the engine (torchtitan style).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from infra.config_train import TrainStageConfig


@dataclass
class StepStats:
    grad_norm: float  # before clipping, over all parameters of all ranks
    lr: float


class Engine(Protocol):
    rank: int
    world_size: int
    data_rank: int  # = rank // sequence_parallel: ranks of one Ulysses group read the same samples
    data_world_size: int

    @property
    def module(self) -> nn.Module: ...  # call forward on this

    def step(self, loss: torch.Tensor) -> StepStats: ...  # backward, clip, optimizer + lr step, zero grads

    def save(self, folder: str) -> None: ...  # model + optimizer + lr scheduler state into an existing folder

    def load(self, folder: str) -> None: ...

    def full_state_dict(self) -> dict[str, torch.Tensor]: ...  # consolidated fp32 weights (ZeRO-3 gathers)

    def all_reduce_mean(self, value: float) -> float: ...  # a metric averaged over ranks

    def close(self) -> None: ...  # tear down what the engine created (process groups) before exit


def lr_lambda(cfg: TrainStageConfig):
    """Linear warmup, then linear decay from lr to lr_end over the stage (report: 1e-4 -> 5e-5 at 256p)."""
    end_ratio = (cfg.lr_end / cfg.lr) if cfg.lr_end else 1.0

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return 1.0 + (end_ratio - 1.0) * progress

    return factor


def build_optimizer(model: nn.Module, cfg: TrainStageConfig) -> torch.optim.Optimizer:
    # AdamW with the stage's lr / weight decay (report section 3.3 table); norms and biases are not decayed,
    # as is usual for transformers, so weight decay only pulls on matrices.
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=1e-8)


class PlainEngine:
    """Single process, fp32 (or bf16 autocast on GPU, applied by the loop)."""

    rank = data_rank = 0
    world_size = data_world_size = 1

    def __init__(self, model: nn.Module, cfg: TrainStageConfig):
        self._model = model
        self.cfg = cfg
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))

    @property
    def module(self) -> nn.Module:
        return self._model

    def step(self, loss: torch.Tensor) -> StepStats:
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self._model.parameters(), self.cfg.grad_clip)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepStats(grad_norm=float(norm), lr=lr)

    def save(self, folder: str) -> None:
        torch.save(
            {"model": self._model.state_dict(), "optimizer": self.optimizer.state_dict(),
             "scheduler": self.scheduler.state_dict()},
            os.path.join(folder, "engine.pt"),
        )

    def load(self, folder: str) -> None:
        state = torch.load(os.path.join(folder, "engine.pt"), map_location="cpu", weights_only=True)
        self._model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._model.state_dict().items()}

    def all_reduce_mean(self, value: float) -> float:
        return value

    def close(self) -> None:
        pass
