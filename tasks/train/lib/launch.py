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
    """``storage_path``: where Ray Train keeps its run folder (shared storage on a multi-node cluster: a local
    folder or an ``s3://`` prefix); None = a fresh temporary folder, never Ray's default ``~/ray_results``."""
    if train_cfg.ray_train:
        return _launch_ray(train_fn, config, train_cfg, storage_path)
    if train_cfg.num_workers > 1:
        return _launch_processes(train_fn, config, train_cfg.num_workers)
    return train_fn(config)


def worker_resources(train_cfg: TrainConfig) -> dict[str, float]:
    """What each Ray Train worker reserves: ``train.resources``; its num_gpus unset = one GPU when the cluster
    has GPUs (asked of the cluster: the driver may be a CPU-only head node)."""
    res = train_cfg.resources
    gpus = res.num_gpus
    if gpus is None:
        import ray

        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    out = {"CPU": res.num_cpus if res.num_cpus is not None else 1.0, **({"GPU": gpus} if gpus else {}), **res.custom}
    if res.memory_gb:
        out["memory"] = int(res.memory_gb * 2**30)
    return out


def storage_args(storage_path: str | None) -> dict:
    """RunConfig's storage: an S3 prefix through pyarrow's S3 filesystem (with the configured endpoint:
    MinIO, moto), a local folder as it is."""
    path = storage_path or tempfile.mkdtemp(prefix="reelflow-ray-train-")
    if not path.startswith("s3://"):
        return {"storage_path": path.removeprefix("file://")}
    import pyarrow.fs

    endpoint = os.environ.get("REELFLOW_S3_ENDPOINT_URL")
    options = {"region": os.environ.get("REELFLOW_S3_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    if endpoint:
        scheme, host = endpoint.split("://", 1)
        options.update(endpoint_override=host, scheme=scheme)
    return {"storage_path": path.removeprefix("s3://"), "storage_filesystem": pyarrow.fs.S3FileSystem(**options)}


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


def _launch_ray(train_fn: TrainFn, config: dict, train_cfg: TrainConfig, storage_path: str | None) -> Any:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    per_worker = worker_resources(train_cfg)
    gpu = bool(per_worker.get("GPU"))
    backend = train_cfg.dist_backend if train_cfg.dist_backend != "auto" else ("nccl" if gpu else "gloo")
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"train_fn": train_fn, "config": config},
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(num_workers=train_cfg.num_workers, use_gpu=gpu,
                                     resources_per_worker=per_worker),
        # A restarted worker group resumes from the stage's last step checkpoint (under the run root).
        run_config=RunConfig(failure_config=FailureConfig(max_failures=train_cfg.max_failures),
                             **storage_args(storage_path)),
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

    from tasks.train.lib.engine_deepspeed import free_port

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
