"""Atomic step checkpoints: engine state + RNG + data position + the loss curve so far.

``{steps_dir}/step-00000010/`` is written as a hidden temporary sibling and renamed when complete, so
a kill -9 at any moment leaves either the previous checkpoint or the new one, never half of one.
Under an S3 run root the same folders live on the object store (``_save_remote``), so a training worker
restarted on another node resumes from them. Resuming from it replays the exact same batches and noise (both are functions of seed, step and
data position), so the loss curve after a resume is bit-exact on CPU.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from infra import storage
from infra.storage import COMPLETE
from tasks.train.lib.data import Position

STEP_RE = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainState:
    step: int = 0
    position: Position = Position()
    history: list[dict] = field(default_factory=list)  # one row of metrics per step
    ema: dict | None = None


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save(steps_dir: str, state: TrainState, engine, keep: int, rank: int = 0) -> str:
    """Every rank calls this (DeepSpeed shards its optimizer per rank); rank 0 commits the rename."""
    if storage.is_remote(steps_dir):
        return _save_remote(steps_dir, state, engine, keep, rank)
    os.makedirs(steps_dir, exist_ok=True)
    final = os.path.join(steps_dir, f"step-{state.step:08d}")
    tmp = os.path.join(steps_dir, f".step-{state.step:08d}.tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    _barrier(engine)
    engine.save(tmp)
    _barrier(engine)
    if rank == 0:
        _write_trainer_files(tmp, state)
        os.replace(tmp, final)
        for old in list_steps(steps_dir)[:-keep]:
            shutil.rmtree(os.path.join(steps_dir, f"step-{old:08d}"), ignore_errors=True)
    _barrier(engine)
    return final


def _write_trainer_files(folder: str, state: TrainState) -> None:
    torch.save({"rng": _rng_state(), "ema": state.ema}, os.path.join(folder, "trainer.pt"))
    meta = {"step": state.step, "position": asdict(state.position), "history": state.history}
    with open(os.path.join(folder, "state.json"), "w") as fh:
        json.dump(meta, fh)


def _save_remote(steps_dir: str, state: TrainState, engine, keep: int, rank: int) -> str:
    """An object store has no rename: every rank saves locally and uploads its own files (ranks may sit on
    different nodes), then rank 0 uploads the trainer state and, last, the ``COMPLETE`` marker that makes the
    step visible to ``list_steps``; a kill before the marker leaves a folder that is never read."""
    final = storage.join(steps_dir, f"step-{state.step:08d}")
    with tempfile.TemporaryDirectory(prefix="reelflow-step-") as local:
        engine.save(local)
        if rank == 0:
            _write_trainer_files(local, state)
        storage.upload_folder(local, final)
    _barrier(engine)
    if rank == 0:
        storage.write_text(storage.join(final, COMPLETE), str(state.step))
        for old in list_steps(steps_dir)[:-keep]:
            storage.remove(storage.join(steps_dir, f"step-{old:08d}"))
    _barrier(engine)
    return final


def _barrier(engine) -> None:
    if engine.world_size > 1:
        torch.distributed.barrier()


def list_steps(steps_dir: str) -> list[int]:
    if storage.is_remote(steps_dir):
        names = [n for n in storage.list_folders(steps_dir) if STEP_RE.match(n)]
        return sorted(int(STEP_RE.match(n).group(1)) for n in names
                      if storage.exists(storage.join(steps_dir, n, COMPLETE)))
    if not os.path.isdir(steps_dir):
        return []
    return sorted(int(m.group(1)) for name in os.listdir(steps_dir) if (m := STEP_RE.match(name)))


def resume(steps_dir: str, engine) -> TrainState:
    """The latest complete checkpoint loaded into ``engine``; a fresh state when there is none."""
    steps = list_steps(steps_dir)
    if not steps:
        return TrainState()
    folder = storage.fetch_folder(storage.join(steps_dir, f"step-{steps[-1]:08d}"))
    engine.load(folder)
    extra = torch.load(os.path.join(folder, "trainer.pt"), map_location="cpu", weights_only=False)
    _set_rng_state(extra["rng"])
    with open(os.path.join(folder, "state.json")) as fh:
        meta = json.load(fh)
    return TrainState(meta["step"], Position(**meta["position"]), meta["history"], extra["ema"])


