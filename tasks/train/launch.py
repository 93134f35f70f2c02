"""Run a training function on N workers: Ray Train (a cluster's workers), local processes, or in-process.

``train_fn(config)`` is the same in all three; it finds its rank in the default process group (Ray Train
creates it; local processes get RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT and the engine creates it).
The return value of rank 0 comes back; a worker's exception is raised here with its traceback.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import torch

from infra.config_train import TrainConfig

TrainFn = Callable[[dict], Any]
log = logging.getLogger(__name__)


def launch(train_fn: TrainFn, config: dict, train_cfg: TrainConfig, storage_path: str | None = None) -> Any:
    """``storage_path``: where Ray Train keeps its run folder (shared storage on a multi-node cluster);
    None = a fresh temporary folder, never Ray's default ``~/ray_results``."""
    if train_cfg.ray_train:
        return _launch_ray(train_fn, config, train_cfg.num_workers, storage_path)
    if train_cfg.num_workers > 1:
        return _launch_processes(train_fn, config, train_cfg.num_workers)
    return train_fn(config)


def _ray_worker(payload: dict) -> None:
    import ray.train

    result = payload["train_fn"](payload["config"])
    # Ray Train V2 keeps reported metrics only with a checkpoint, and metrics may not hold tensors: rank 0
    # reports its pickled result as a one-file checkpoint. report() is a barrier every worker must reach.
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report({})
        return
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "result.pkl"), "wb") as f:
            pickle.dump(result, f)
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _launch_ray(train_fn: TrainFn, config: dict, num_workers: int, storage_path: str | None) -> Any:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = torch.cuda.is_available()
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"train_fn": train_fn, "config": config},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(storage_path=storage_path or tempfile.mkdtemp(prefix="reelflow-ray-train-")),
    )
    result = trainer.fit()  # raises TrainingFailedError with the workers' tracebacks
    with result.checkpoint.as_directory() as folder, open(os.path.join(folder, "result.pkl"), "rb") as f:
        return pickle.load(f)


def _process_worker(rank: int, world_size: int, port: int, train_fn: TrainFn, config: dict, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        result = train_fn(config)
    except BaseException:
        with open(os.path.join(out_dir, f"error-{rank}.txt"), "w") as f:
            f.write(traceback.format_exc())
        raise
    # Files, not a multiprocessing queue: no feeder thread that must drain before the process may exit.
    if rank == 0:
        with open(os.path.join(out_dir, "result.pkl"), "wb") as f:
            pickle.dump(result, f)
    open(os.path.join(out_dir, f"done-{rank}"), "w").close()


_PEER_GRACE_S = 10.0  # after a worker fails, how long its peers may take to notice before being stopped


class WorkerError(RuntimeError):
    pass


def _launch_processes(train_fn: TrainFn, config: dict, num_workers: int) -> Any:
    from multiprocessing.connection import wait

    from tasks.train.engine_deepspeed import free_port

    ctx = torch.multiprocessing.get_context("spawn")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="reelflow-launch-") as out_dir:
        procs = [ctx.Process(target=_process_worker, args=(rank, num_workers, port, train_fn, config, out_dir))
                 for rank in range(num_workers)]
        for proc in procs:
            proc.start()
        running = list(procs)
        while running:
            wait([proc.sentinel for proc in running])
            running = [proc for proc in running if proc.exitcode is None]
            failed = [r for r, proc in enumerate(procs)
                      if proc.exitcode and not os.path.exists(os.path.join(out_dir, f"done-{r}"))]
            if failed:  # one failed before finishing: its peers would block in a collective
                for proc in running:
                    proc.join(_PEER_GRACE_S)
                    if proc.exitcode is None:
                        proc.terminate()
                        proc.join()
                running = []
        errors = sorted(name for name in os.listdir(out_dir) if name.startswith("error-"))
        if errors:
            with open(os.path.join(out_dir, errors[0])) as f:
                raise WorkerError(f"training worker {errors[0][6:-4]} failed:\n{f.read()}")
        missing = [rank for rank in range(num_workers) if not os.path.exists(os.path.join(out_dir, f"done-{rank}"))]
        bad_exit = {rank: proc.exitcode for rank, proc in enumerate(procs) if proc.exitcode != 0}
        if missing:
            raise WorkerError(f"training workers {missing} did not finish; exit codes {bad_exit}")
        if bad_exit:  # every worker finished and wrote its result: a crash in interpreter teardown loses nothing
            log.warning("training workers finished but exited with codes %s (negative = signal)", bad_exit)
        with open(os.path.join(out_dir, "result.pkl"), "rb") as f:
            return pickle.load(f)
