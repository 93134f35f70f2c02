"""The captioner's fine-tuning as a training-launcher job (report 3.2, SkyCaptioner-V1).

``train_captioner(job)`` is module-level and takes a plain dict, like the DiT's ``train_worker``, so the
training launcher (``tasks.train.lib.launch``) runs it in-process, in spawned processes or on Ray Train
workers of a cluster with the stage's declared resources. Everything it reads or writes is a URI (the
supervised examples, the base captioner, the step checkpoints, the output folder), so a worker restarted
on another node resumes from the newest step checkpoint under the run root.
"""

from __future__ import annotations

import logging
import os
import tempfile

import torch

from infra import storage

log = logging.getLogger("reelflow.captioner_distill")


def _process_group() -> None:
    """The launcher's local processes get RANK/WORLD_SIZE/MASTER_* and expect the job to join the group (Ray
    Train creates it itself); gradients are summed over gloo on CPU."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def save_examples(examples: list[dict[str, torch.Tensor]], uri: str) -> None:
    """The supervised examples as one file the workers read (written locally, then uploaded when remote)."""
    with tempfile.TemporaryDirectory(prefix="reelflow-capex-") as tmp:
        local = os.path.join(tmp, "examples.pt")
        torch.save(examples, local)
        storage.upload(local, uri)


def train_captioner(job: dict) -> list[float] | None:
    """Fine-tune the captioner at ``job["base"]`` on ``job["examples"]``; rank 0 writes the model and its
    tokenizer to ``job["out_dir"]`` and returns the loss of each step (None on the other ranks)."""
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from models.captioner_tune import fine_tune

    _process_group()
    threads = torch.get_num_threads()  # in-process (one worker) this is the flow's process: restored after
    try:
        torch.set_num_threads(job.get("torch_threads") or threads)
        return _train(job, Qwen2_5_VLForConditionalGeneration, AutoTokenizer, fine_tune)
    finally:
        torch.set_num_threads(threads)


def _train(job: dict, model_cls, tokenizer_cls, fine_tune) -> list[float] | None:
    rank = int(os.environ.get("RANK", "0"))
    base = storage.fetch_folder(job["base"])
    model = model_cls.from_pretrained(base)
    if torch.cuda.is_available():  # a worker given a GPU (resources.num_gpus): Ray set CUDA_VISIBLE_DEVICES
        model = model.cuda()
    with storage.local_copy(job["examples"]) as path:
        examples = torch.load(path, weights_only=False)
    tracker = None
    if rank == 0 and job.get("mlflow_run"):
        from infra.tracking import Tracker

        tracker = Tracker(job["tracking_uri"], job["experiment"])
    on_step = (lambda step, loss: tracker.log_metrics(job["mlflow_run"], {"loss": loss}, step)) if tracker else None
    torch.manual_seed(job["seed"])
    losses = fine_tune(model, examples, lr=job["lr"], epochs=job["epochs"], batch=job["batch"], seed=job["seed"],
                       weight_decay=job["weight_decay"], on_step=on_step, steps_dir=job["steps_dir"],
                       checkpoint_every=job["checkpoint_every"])
    if rank != 0:
        return None
    tokenizer = tokenizer_cls.from_pretrained(base)
    if storage.is_remote(job["out_dir"]):
        with tempfile.TemporaryDirectory(prefix="reelflow-captioner-") as local:
            model.cpu().save_pretrained(local)
            tokenizer.save_pretrained(local)
            storage.upload_folder(local, job["out_dir"])
    else:
        model.cpu().save_pretrained(job["out_dir"])
        tokenizer.save_pretrained(job["out_dir"])
    return losses
