"""Training state on an S3 run root (a moto server on 127.0.0.1): nothing assumes a disk shared with the driver.

Step checkpoints are written to the object store, and a process in another working directory with its own
temp dir and node cache (what a restarted worker on another node sees) resumes from them bit-exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from s3_server import moto_s3

from infra import storage
from tasks.train.lib import state as ckpt

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "reelflow-cluster"

RUN = """
import json, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from train_helpers import OverfitSet, stage_cfg
from infra import storage
from models.checkpoint import build_components
from tasks.train.lib.engine import PlainEngine
from tasks.train.lib.loop import LoopSpec, train
storage.configure_storage({endpoint!r})
cfg, stage = stage_cfg(6, checkpoint_every=3)
stop = {stop}
def on_step(row):
    if row["step"] == stop:
        raise SystemExit(3)  # a crash after the step-3 checkpoint: steps 4..stop are lost
state = train(PlainEngine(build_components("tiny")["transformer"], stage), OverfitSet(),
              LoopSpec(stage, cfg, cfg.resolutions["256p"], {steps_dir!r}, 16), on_step=on_step)
print(json.dumps([row["loss"] for row in state.history]))
"""


@pytest.fixture
def s3(monkeypatch):
    with moto_s3(monkeypatch, bucket=BUCKET) as (endpoint, client):
        storage.configure_storage(endpoint)
        yield endpoint, client
    storage.configure_storage(None)
    monkeypatch.delenv("REELFLOW_S3_ENDPOINT_URL", raising=False)


def _run(tmp_path: Path, name: str, endpoint: str, steps_dir: str, stop: int | None) -> subprocess.CompletedProcess:
    """The training loop in a fresh process whose cwd, TMPDIR and node cache are its own (a 'node')."""
    node = tmp_path / name
    (node / "tmp").mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(node / "tmp"), "REELFLOW_NODE_CACHE": str(node / "cache"),
           "PYTHONPATH": str(ROOT)}
    script = RUN.format(tests=str(ROOT / "tests"), endpoint=endpoint, stop=stop, steps_dir=steps_dir)
    return subprocess.run([sys.executable, "-c", script], cwd=node, env=env, capture_output=True, text=True,
                          timeout=600)


def test_step_checkpoints_on_s3_resume_bit_exactly_on_another_node(s3, tmp_path):
    endpoint, client = s3
    reference = _run(tmp_path, "reference", endpoint, str(tmp_path / "local-steps"), None)
    assert reference.returncode == 0, reference.stderr[-2000:]
    steps_dir = f"s3://{BUCKET}/runs/r1/.steps/pretrain-256p-abc"
    crashed = _run(tmp_path, "node-a", endpoint, steps_dir, stop=5)
    assert crashed.returncode == 3, crashed.stderr[-2000:]
    assert ckpt.list_steps(steps_dir) == [3]  # committed on the object store, marker last
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="runs/r1/.steps/")["Contents"]}
    assert {"state.json", "trainer.pt", "engine.pt", storage.COMPLETE} <= {k.rsplit("/", 1)[1] for k in keys}
    resumed = _run(tmp_path, "node-b", endpoint, steps_dir, stop=None)  # another cwd, temp dir and cache
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.strip().splitlines()[-1] == reference.stdout.strip().splitlines()[-1]
    assert ckpt.list_steps(steps_dir) == [3, 6]
    assert not (tmp_path / "node-b" / "local-steps").exists()


def test_folders_round_trip_through_the_node_cache(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("REELFLOW_NODE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "ckpt"
    (src / "transformer").mkdir(parents=True)
    (src / "transformer" / "config.json").write_text("{}")
    (src / "model_index.json").write_text('{"_class_name": "X"}')
    uri = f"s3://{BUCKET}/runs/r1/models/base"
    storage.upload_folder(str(src), uri)
    local = storage.fetch_folder(uri)
    assert local.startswith(str(tmp_path / "cache"))
    assert (Path(local) / "transformer" / "config.json").read_text() == "{}"
    assert os.path.exists(os.path.join(local, storage.COMPLETE))
    assert storage.fetch_folder(uri) == local  # cached: fetched once per node
    assert storage.fetch_folder(str(src)) == str(src)  # a local folder is used where it is
    assert storage.list_folders(f"s3://{BUCKET}/runs/r1/models") == ["base"]


def test_a_folder_built_on_the_driver_is_shared_through_a_remote_run_root(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("REELFLOW_NODE_CACHE", str(tmp_path / "node"))
    built = tmp_path / "tiny-clip"
    built.mkdir()
    (built / "config.json").write_text('{"v": 1}')
    root = f"s3://{BUCKET}/runs"
    uri = storage.share_folder(str(built), root, "tiny-clip")
    assert uri == f"{root}/models/tiny-clip"
    assert (Path(storage.fetch_folder(uri)) / "config.json").read_text() == '{"v": 1}'  # what a worker reads
    (built / "config.json").write_text('{"v": 2}')
    assert storage.share_folder(str(built), root, "tiny-clip") == uri  # uploaded once: the marker is there
    assert storage.read_text(f"{uri}/config.json") == '{"v": 1}'
    assert storage.share_folder(str(built), str(tmp_path / "runs"), "tiny-clip") == str(built)  # local root
