"""The production topology end to end (slow): `infra.cluster up` on free ports, the whole report on a 2-film
corpus through it (S3 run root, two-node Ray, MLflow and Prefect servers), the worker node's raylet killed
once while ``score`` runs, the supervisor bringing the node back; every stage must be published and the
final video written. The topology is torn down even when the test fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infra import cluster, storage

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = "ci-cluster"
# Every stage of the report, each as short as it can be: the test is about the topology, not the numbers.
SHORT = [arg for key in ("pretrain-256p", "pretrain-360p", "pretrain-540p", "sft-540p", "forcing", "sft-720p")
         for arg in ("--set", f"train.stages.{key}.steps=2", "--set", f"train.stages.{key}.checkpoint_every=1")]
SHORT += ["--set", "post.dpo.rounds=1", "--set", "post.dpo.steps=2", "--set", "post.reward.steps=2"]


def _kill_when_stage_starts(state: dict, log: Path, stage: str, killed: list, stop: threading.Event) -> None:
    """Kill the worker raylet (by pid) a few seconds after the run logs that ``stage`` is running."""
    while not stop.is_set():
        if log.exists() and re.search(rf"stage {stage}\s+running", log.read_text(errors="replace")):
            time.sleep(10)
            killed.extend(cluster.kill_worker(Path(state["folder"])))
            return
        time.sleep(2)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("REELFLOW_CLUSTER_E2E") != "1",
                    reason="opt-in (REELFLOW_CLUSTER_E2E=1): ~15 min for the whole report on a 2-node cluster, not yet "
                           "seen passing end to end (a first run reached pretraining on S3 before it was stopped)")
@pytest.mark.timeout(3600)  # the whole report on a 2-node cluster: ~15 min on 2 idle cores (estimate)
def test_report_on_the_local_cluster_survives_a_worker_node_loss(tmp_path):
    folder = tmp_path / "cluster"
    try:
        state = cluster.up(folder, {"s3": 0, "mlflow": 0, "prefect": 0, "ray": 0})
        killed: list[int] = []
        stop = threading.Event()
        log = tmp_path / "run.log"
        killer = threading.Thread(target=_kill_when_stage_starts, args=(state, log, "score", killed, stop), daemon=True)
        killer.start()
        with open(log, "w") as out:
            code = subprocess.run(
                [sys.executable, "-m", "infra.cluster", "run", "--state", str(folder), "--videos", "2", "--",
                 "run", "--audit", "simulated", "--run-id", RUN_ID, "--set", f"state_dir={tmp_path / 'state'}",
                 *SHORT],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=3600).returncode
        stop.set()
        assert code == 0, log.read_text(errors="replace")[-4000:]
        assert killed, "the worker node was never killed (score did not start?)"
        supervisor = (folder / "logs" / "supervisor.log").read_text()
        assert "worker node back" in supervisor
        storage.configure_storage(state["s3"])
        run = f"s3://reelflow/runs/{RUN_ID}"
        for stage in ("ingest", "segment", "clips", "score", "caption", "pretrain-256p", "sft-540p", "reward",
                      "dpo-1", "forcing", "sft-720p", "video"):
            assert storage.exists(f"{run}/{stage}/_SUCCESS.json"), stage
        assert storage.size(f"{run}/video/video.mp4") > 0
    finally:
        cluster.down(folder)
        storage.configure_storage(None)
