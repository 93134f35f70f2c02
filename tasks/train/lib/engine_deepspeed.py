"""DeepSpeed engine: ZeRO 0-3 over gloo (CPU) or NCCL (GPU), same optimizer and lr maths as PlainEngine.

The optimizer is ``build_optimizer``'s torch AdamW and the schedule ``lr_lambda``'s LambdaLR, handed to
``deepspeed.initialize`` as client objects, so no DeepSpeed C++ op (cpu_adam, fused_adam) is built:
the ZeRO partitioning is pure Python + collectives. Gradients are averaged over ranks by DeepSpeed, so
each rank feeding its share of a global batch (loss = mean over its samples) equals the full batch.

Process groups: when torch.distributed is already up (Ray Train's TorchTrainer) it is reused and left
to its owner; otherwise it is created from RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (defaults
for a single process) and torn down by ``close()``.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
from torch import nn

from infra.build_locks import clear_stale_locks
from infra.config_train import TrainConfig, TrainStageConfig
from tasks.train.lib.engine import StepStats, build_optimizer, lr_lambda

CHECKPOINT_TAG = "engine"  # fixed: the caller publishes the whole folder atomically, one tag per folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _init_process_group() -> bool:
    """Join (or start) the default process group; True when this call created it."""
    if dist.is_initialized():
        return False
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        if os.environ["WORLD_SIZE"] != "1":
            raise RuntimeError("WORLD_SIZE > 1 needs MASTER_ADDR / MASTER_PORT (tasks.train.lib.launch sets them)")
        os.environ["MASTER_PORT"] = str(free_port())
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def ds_config(stage_cfg: TrainStageConfig, train_cfg: TrainConfig) -> dict:
    config = {
        "train_micro_batch_size_per_gpu": 1,  # the loop feeds batches itself; DS only needs consistent numbers
        "gradient_accumulation_steps": 1,
        "gradient_clipping": stage_cfg.grad_clip,
        "zero_optimization": {"stage": train_cfg.zero_stage},
        "zero_allow_untested_optimizer": True,  # torch AdamW: the same maths as PlainEngine
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if train_cfg.mixed_precision == "bf16":
        config["bf16"] = {"enabled": True}
    return config


class DeepSpeedEngine:
    def __init__(self, model: nn.Module, stage_cfg: TrainStageConfig, train_cfg: TrainConfig):
        import deepspeed

        clear_stale_locks()  # a killed build of DeepSpeed's comm op would make this start wait forever
        self._owns_group = _init_process_group()
        deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False, verbose=False)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.cfg = stage_cfg
        optimizer = build_optimizer(model, stage_cfg)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(stage_cfg)),
            config=ds_config(stage_cfg, train_cfg),
            dist_init_required=False,
        )
        # Ranks of one sequence-parallel group read the same samples: the loop slices batches by data_rank.
        self.data_rank = self.rank // train_cfg.sequence_parallel
        self.data_world_size = self.world_size // train_cfg.sequence_parallel
        if train_cfg.sequence_parallel > 1:
            from tasks.train.lib.ulysses import apply_ulysses

            apply_ulysses(self.engine.module, train_cfg.sequence_parallel)

    @property
    def module(self) -> nn.Module:
        return self.engine  # forward through the DS engine: ZeRO-3 hooks, bf16 input casts

    def step(self, loss: torch.Tensor) -> StepStats:
        lr = self.scheduler.get_last_lr()[0]
        self.engine.backward(loss)  # averages gradients over ranks (stage 0: all-reduce; 1/2: reduce-scatter)
        norm = None
        if not self.engine.zero_optimization() and not self.engine.bfloat16_enabled():
            # Plain fp32 data parallel: DS clips but does not record the norm; grads are already averaged.
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            norm = float(torch.nn.utils.get_total_norm(grads))
        self.engine.step()  # clip (gradient_clipping), optimizer step, lr step, zero grads
        if norm is None:
            norm = float(self.engine.get_global_grad_norm())  # pre-clip global norm from the ZeRO optimizer
        return StepStats(grad_norm=norm, lr=lr)

    def save(self, folder: str) -> None:
        self.engine.save_checkpoint(folder, tag=CHECKPOINT_TAG)

    def load(self, folder: str) -> None:
        path, _ = self.engine.load_checkpoint(folder, tag=CHECKPOINT_TAG)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint (tag {CHECKPOINT_TAG!r}) under {folder}")

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """fp32 weights on every rank: ZeRO's fp32 master copy (gathered from the partitions under ZeRO-3,
        all-reduced from the shards under ZeRO-1/2 and bf16), else the module's own tensors. Collective."""
        from deepspeed.utils import safe_get_full_fp32_param

        state = {}
        for name, tensor in self.engine.module.state_dict(keep_vars=True).items():
            full = safe_get_full_fp32_param(tensor) if isinstance(tensor, nn.Parameter) else None
            state[name] = (full if full is not None else tensor).detach().float().cpu().clone()
        return state

    def all_reduce_mean(self, value: float) -> float:
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self._device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    @property
    def _device(self) -> torch.device:
        return torch.device(self.engine.device) if torch.cuda.is_available() else torch.device("cpu")

    def close(self) -> None:
        """Release DeepSpeed's state and, if this engine created it, the process group (see module doc)."""
        self.engine.destroy()
        if self._owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
