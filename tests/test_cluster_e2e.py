"""The production topology end to end (markers ``slow`` and ``cluster``; ``make test-cluster``): ``infra.cluster
up`` on free ports, the whole report on a 2-film corpus through it (S3 run root on moto, a two-node Ray cluster,
MLflow and Prefect servers), the worker node's raylet killed by pid twice, once while ``score`` runs and once
after pretrain-256p's first step checkpoint, the supervisor bringing the node back each time.

Then: every stage published on S3 and the video written; every MLflow run of the run on the tracking server with
its artifacts on S3 and every registered model's source on the run root; Prefect's server holding the completed
flow runs; both recoveries on record in MLflow; and the repaired run's outputs (clip ids, dataset membership,
every loss curve, every published weight folder, bit for bit: CPU, one thread per worker) equal to an
uninterrupted run of the same config on the same cluster. The topology is torn down even when the test fails."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infra import cluster, storage
from infra.run_fingerprint import differences, fingerprint

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parent.parent
RUN_ID, REF_ID = "ci-cluster", "ci-cluster-ref"
# The smallest report that still runs every stage (tests/test_report_e2e.py's corpus and post-training sizes).
SMALL = ["corpus.width=160", "corpus.height=90", "corpus.shots_per_video=[4,5]", "corpus.defect_rate=0",
         *(f"audit.gates.{g}.max_bad_rate=1" for g in ("D_256p", "D_360p", "D_540p", "D_540p_sft", "D_720p_sft")),
         *(f"train.stages.{s}.{k}=2" for s in ("pretrain-360p", "pretrain-540p", "sft-540p", "forcing", "sft-720p")
           for k in ("steps", "checkpoint_every")),
         # the killed training stage: a step checkpoint per step, so the kill lands between two of them
         "train.stages.pretrain-256p.steps=4", "train.stages.pretrain-256p.checkpoint_every=1",
         "post.pairs.dataset=D_540p", "post.pairs.max_clips=4", "post.pairs.human_prompts=2",
         "post.pairs.human_samples_per_prompt=2", "post.pairs.frames=9", "post.reward.steps=2",
         "post.dpo.prompts=1", "post.dpo.samples_per_prompt=2", "post.dpo.steps=2", "post.dpo.frames=9",
         "post.video.num_frames=33", "post.video.base_num_frames=17", "post.video.overlap_history=5",
         "post.video.steps=2", "post.dmd.iterations=5", "post.dmd.teacher_steps=4", "post.dmd.frames=9",
         "post.dmd.regression_pairs=1", "post.dmd.eval_prompts=1", "stages.captioner_distill.epochs=2",
         "stages.captioner_distill.max_clips=8"]
COMPARED = ["clips", "D_256p", "D_360p", "D_540p", "D_post", "D_540p_sft", "D_720p_sft", "pretrain-256p"]
EVERY_STAGE = ("corpus", "ingest", "segment", "clips", "score", "caption", "D_256p", "D_720p_sft", "pretrain-256p",
               "pretrain-360p", "pretrain-540p", "sft-540p", "pairs", "reward", "dpo-1", "dpo-3", "forcing", "sft-720p",
               "distill-dmd", "video", "captioner-distill")


def _wait_for(check, stop: threading.Event, poll: float = 0.5) -> bool:
    while not stop.is_set():
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001 - S3 listing while the run writes: try again
            pass
        time.sleep(poll)
    return False


def _killer(folder: Path, log: Path, run_uri: str, killed: dict, stop: threading.Event) -> None:
    """Kill the worker raylet once a first clip is scored, then once pretrain-256p has a step checkpoint."""
    from tasks.curate import score
    from tasks.train.lib.state import list_steps

    def scoring() -> bool:
        done = re.findall(re.escape(score.PROGRESS) + r":\s+\d+%\|[^|]*\|\s*(\d+)/", log.read_text(errors="replace"))
        return any(int(n) >= 1 for n in done)

    def stepped() -> bool:
        folders = [f for f in storage.list_folders(storage.join(run_uri, ".steps")) if f.startswith("pretrain-256p-")]
        return any(list_steps(storage.join(run_uri, ".steps", f)) for f in folders)

    for stage, ready in (("score", scoring), ("pretrain-256p", stepped)):
        # the node must be back from the previous kill, and the stage under way
        if not _wait_for(lambda r=ready: r() and cluster.node_pids(folder, "worker", "raylet"), stop):
            return
        killed[stage] = cluster.kill_worker(folder)


def _reelflow(folder: Path, run_id: str, log: Path, env: dict, *extra: str) -> int:
    args = [sys.executable, "-m", "infra.cluster", "run", "--state", str(folder), "--videos", "2", "--", "run",
            "--audit", "simulated", "--run-id", run_id, "--set", f"state_dir={folder / 'driver-state'}",
            *(a for s in SMALL for a in ("--set", s)), *extra]
    with open(log, "w") as out:
        return subprocess.run(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=3000).returncode


def _check_tracking(state: dict) -> None:
    """Every MLflow run of the run on the server, artifacts on S3; models registered from the run root."""
    import boto3
    from mlflow.tracking import MlflowClient

    client = MlflowClient(state["mlflow"])
    runs = [r for e in client.search_experiments() for r in client.search_runs(
        [e.experiment_id], f"tags.`reelflow.run_id` = '{RUN_ID}'", max_results=1000)]
    stages = {r.data.tags.get("reelflow.stage") for r in runs}
    assert {"score", "pretrain-256p", "reward", "dpo-1", "video"} <= stages, stages
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:/") for r in runs), \
        {r.info.artifact_uri for r in runs}  # proxied by the server to its S3 artifact store
    s3 = boto3.client("s3", endpoint_url=state["s3"], region_name="us-east-1")
    stored = s3.list_objects_v2(Bucket="reelflow-mlflow", Prefix="artifacts/")
    assert stored.get("KeyCount", 0) > 0
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name = '{model.name}'"):
            assert version.source.startswith("s3://reelflow/runs/"), (model.name, version.source)
    by_stage = {r.data.tags.get("reelflow.stage"): r for r in runs if r.info.status == "FINISHED"}
    # both recoveries on record: the node losses each stage survived, the training resume's step
    assert by_stage["score"].data.metrics.get("ray_nodes_lost", 0) >= 1
    train = by_stage["pretrain-256p"].data.metrics
    assert train.get("ray_nodes_lost", 0) >= 1 and train.get("recovered_from_step", 0) >= 1, train


def _check_prefect(state: dict) -> None:
    import json
    import urllib.request

    request = urllib.request.Request(f"{state['prefect']}/api/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - 127.0.0.1
        flow_runs = [(r["name"], r["state_type"]) for r in json.load(resp)]
    for name in (RUN_ID, f"curate-{RUN_ID}", f"pretrain-{RUN_ID}", f"post-train-{RUN_ID}", f"distill-{RUN_ID}"):
        assert (name, "COMPLETED") in flow_runs, (name, flow_runs)


@pytest.mark.timeout(4800)  # 39 min on 2 shared cores at load 17-27: the whole report twice (killed, uninterrupted)
def test_report_on_the_local_cluster_survives_worker_node_losses_unchanged(tmp_path, monkeypatch):
    folder = tmp_path / "cluster"
    # The nodes, the driver and every Ray worker import this checkout; DeepSpeed's CPU op is built once.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", os.environ.get("TORCH_EXTENSIONS_DIR")
                       or str(ROOT / ".reelflow" / "torch_extensions"))
    stop = threading.Event()
    try:
        state = cluster.up(folder, {"s3": 0, "mlflow": 0, "prefect": 0, "ray": 0})
        env = {**os.environ, **cluster.base_env(state)}
        for key, value in cluster.CREDENTIALS.items():
            monkeypatch.setenv(key, value)
        storage.configure_storage(state["s3"])
        run_uri, ref_uri = f"s3://reelflow/runs/{RUN_ID}", f"s3://reelflow/runs/{REF_ID}"
        killed: dict[str, list[int]] = {}
        log = tmp_path / "run.log"
        killer = threading.Thread(target=_killer, args=(folder, log, run_uri, killed, stop), daemon=True)
        killer.start()
        code = _reelflow(folder, RUN_ID, log, env)
        stop.set()
        assert code == 0, log.read_text(errors="replace")[-4000:]
        assert set(killed) == {"score", "pretrain-256p"} and all(killed.values()), killed
        assert (folder / "logs" / "supervisor.log").read_text().count("worker node back") >= 2
        for stage in EVERY_STAGE:
            assert storage.exists(f"{run_uri}/{stage}/_SUCCESS.json"), stage
        assert storage.size(f"{run_uri}/video/video.mp4") > 0
        _check_tracking(state)
        _check_prefect(state)

        ref_log = tmp_path / "ref.log"
        code = _reelflow(folder, REF_ID, ref_log, env)
        assert code == 0, ref_log.read_text(errors="replace")[-4000:]
        repaired, uninterrupted = fingerprint(run_uri), fingerprint(ref_uri)
        (tmp_path / "fingerprints.json").write_text(json.dumps({"repaired": repaired, "uninterrupted": uninterrupted}))
        assert not [k for k in repaired if k.endswith(".published")], repaired
        weights = [k for k in repaired if k.endswith((".checkpoint", ".reward_model", ".captioner"))]
        assert {f"{s}.checkpoint" for s in ("pretrain-256p", "dpo-3", "sft-720p")} <= set(weights), weights
        assert {f"{d}.members" for d in COMPARED if d.startswith("D_")} <= set(repaired)
        assert len(repaired["pretrain-256p.curve"]) == 4
        # the whole report, not only the stages that were interrupted: every clip id, dataset member, loss and weight
        assert differences(repaired, uninterrupted) == []
    finally:
        stop.set()
        cluster.down(folder)
        storage.configure_storage(None)
