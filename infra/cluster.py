"""The production topology on one machine: a two-node Ray cluster, MLflow and Prefect servers, S3 (moto).

``python -m infra.cluster up`` starts, as separate local processes on 127.0.0.1: moto's S3 server (buckets
created), an MLflow tracking server (sqlite backend in the state folder, artifacts proxied to S3), a Prefect
server, a Ray head (``ray start --head``) and a Ray worker node started separately (``ray start --address``)
that advertises GPUs and a ``worker_node`` resource, so GPU requests are scheduled even where the compute
falls back to CPU. Each Ray node has its own ``--temp-dir`` (and the worker its own working directory), so
no other ``ray.init()`` on the machine auto-connects to it and the worker never sees the driver's paths.
A supervisor brings the worker node back when its raylet dies (the report's self-repair: the cluster
detects the lost node and reallocates). Ports, pids and logs live in the state folder (``cluster.json``);
``down`` stops exactly those processes, by pid.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
BUCKETS = ("reelflow", "reelflow-mlflow")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(1)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s\n{tail}")


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - 127.0.0.1 only
        return r.status == 200


def _spawn(args: list[str], log: Path, env: dict, cwd: Path | None = None) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)  # its own group: `down` stops it and its children
    return proc.pid


def base_env(state: dict) -> dict:
    """What every client of the topology needs: S3 endpoint and credentials, Ray, MLflow and Prefect URLs."""
    # RAY_AUTH_MODE: a loopback-only cluster, without the token file a `ray start --head` would otherwise
    # expect every node and driver to share.
    return {**CREDENTIALS, "RAY_AUTH_MODE": "disabled", "MLFLOW_S3_ENDPOINT_URL": state["s3"], "REELFLOW_S3_ENDPOINT_URL": state["s3"],
            "RAY_ADDRESS": state["ray"], "PREFECT_API_URL": state["prefect"] + "/api",
            "MLFLOW_TRACKING_URI": state["mlflow"]}


def overrides(state: dict) -> list[str]:
    """``--set`` arguments pointing the cluster-local profile at this topology's ports."""
    return ["--set", f"storage.s3_endpoint_url={state['s3']}", "--set", f"tracking.mlflow_uri={state['mlflow']}",
            "--set", f"prefect.api_url={state['prefect']}/api", "--set", f"ray.address={state['ray']}"]


def ray_temp(folder: Path, node: str) -> Path:
    """A node's --temp-dir: short (Ray's socket paths must fit in 107 bytes) and unique to the state folder."""
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"rfc-{key}-{node}"


def _ray_start(node: str, folder: Path, args: list[str], env: dict, attempts: int = 3) -> None:
    """``ray start`` for one node; retried, because it gives a raylet only 30 s to register with the GCS,
    which a loaded machine can miss (the half-started node is killed before the next try)."""
    temp = ray_temp(folder, node)
    temp.mkdir(parents=True, exist_ok=True)
    cwd = folder / f"cwd-{node}"
    cwd.mkdir(exist_ok=True)
    log = folder / "logs" / f"ray-{node}.log"
    for attempt in range(1, attempts + 1):
        with open(log, "ab") as out:
            done = subprocess.run([str(BIN / "ray"), "start", f"--temp-dir={temp}", "--node-ip-address=127.0.0.1",
                                   "--disable-usage-stats", *args], stdout=out, stderr=subprocess.STDOUT,
                                  env={**env, "TMPDIR": str(cwd)}, cwd=cwd, timeout=300)
        if done.returncode == 0:
            return
        _kill_node(folder, node)
        if attempt == attempts:
            raise RuntimeError(f"`ray start` of the {node} node failed {attempts} times; see {log}")


def node_pids(folder: Path, node: str, name: str | None = None) -> list[int]:
    """Pids of the processes of one Ray node (their command lines name its own temp dir), optionally only
    those whose command line contains ``name`` (e.g. ``raylet``)."""
    import psutil

    marker = str(ray_temp(folder, node))
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if marker in cmd and (name is None or name in cmd):
            found.append(proc.info["pid"])
    return found


def _kill_node(folder: Path, node: str) -> None:
    for pid in node_pids(folder, node):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_worker(folder: Path, state: dict) -> None:
    res = json.dumps({"worker_node": 1})
    _ray_start("worker", folder, [f"--address={state['ray']}", f"--num-cpus={state['worker_cpus']}",
                                  f"--num-gpus={state['worker_gpus']}", f"--resources={res}"],
               {**os.environ, **base_env(state)})


def up(folder: Path, ports: dict[str, int], worker_cpus: int = 2, worker_gpus: int = 2) -> dict:
    folder = folder.resolve()
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    if (folder / "cluster.json").exists():
        raise RuntimeError(f"a cluster is already recorded in {folder}/cluster.json: run `make cluster-down` first")
    port = {k: v or free_port() for k, v in ports.items()}
    state = {"folder": str(folder), "s3": f"http://127.0.0.1:{port['s3']}", "mlflow": f"http://127.0.0.1:{port['mlflow']}",
             "prefect": f"http://127.0.0.1:{port['prefect']}", "ray": f"127.0.0.1:{port['ray']}", "pids": {},
             "worker_cpus": worker_cpus, "worker_gpus": worker_gpus}
    env = {**os.environ, **base_env(state)}
    env.pop("RAY_ADDRESS")  # the servers are no Ray clients
    env.pop("MLFLOW_TRACKING_URI")
    logs = folder / "logs"
    try:
        state["pids"]["s3"] = _spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port["s3"])],
                                     logs / "s3.log", env)
        _wait(lambda: _http_ok(state["s3"] + "/moto-api/"), "moto S3", 120, logs / "s3.log")
        import boto3

        client = boto3.client("s3", endpoint_url=state["s3"], region_name="us-east-1", **{
            "aws_access_key_id": "testing", "aws_secret_access_key": "testing"})
        for bucket in BUCKETS:
            client.create_bucket(Bucket=bucket)
        state["pids"]["mlflow"] = _spawn([
            str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port["mlflow"]),
            "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--serve-artifacts",
            "--artifacts-destination", "s3://reelflow-mlflow/artifacts", "--workers", "1"], logs / "mlflow.log", env)
        state["pids"]["prefect"] = _spawn([
            str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port["prefect"])],
            logs / "prefect.log", {**env, "PREFECT_HOME": str(folder / "prefect"), "PREFECT_API_URL": "",
                                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"})
        _ray_start("head", folder, ["--head", f"--port={port['ray']}", "--num-cpus=1", "--num-gpus=0",
                                    "--include-dashboard=false"], env)
        start_worker(folder, state)
        _save(folder, state)  # the supervisor reads it
        state["pids"]["supervisor"] = _spawn([sys.executable, "-m", "infra.cluster", "supervise", "--state", str(folder)],
                                             logs / "supervisor.log", env, cwd=Path(__file__).resolve().parent.parent)
        _wait(lambda: _http_ok(state["mlflow"] + "/health"), "MLflow server", 300, logs / "mlflow.log")
        _wait(lambda: _http_ok(state["prefect"] + "/api/health"), "Prefect server", 300, logs / "prefect.log")
    except BaseException:
        _save(folder, state)
        down(folder)
        raise
    _save(folder, state)
    return state


def _save(folder: Path, state: dict) -> None:
    tmp = folder / "cluster.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, folder / "cluster.json")


def load(folder: Path) -> dict:
    path = folder.resolve() / "cluster.json"
    if not path.exists():
        raise RuntimeError(f"no cluster recorded in {path}: run `make cluster-up` first")
    return json.loads(path.read_text())


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def down(folder: Path) -> None:
    """Stop the supervisor first (it would restart the worker), then the Ray nodes and the servers; by pid."""
    folder = folder.resolve()
    path = folder / "cluster.json"
    state = json.loads(path.read_text()) if path.exists() else {"pids": {}}
    if "supervisor" in state["pids"]:
        _kill_group(state["pids"]["supervisor"])
    for node in ("worker", "head"):
        _kill_node(folder, node)
        shutil.rmtree(ray_temp(folder, node), ignore_errors=True)  # session logs and sockets: ours, keyed by folder
    for name in ("prefect", "mlflow", "s3"):
        if name in state["pids"]:
            _kill_group(state["pids"][name])
    path.unlink(missing_ok=True)


def kill_worker(folder: Path) -> list[int]:
    """kill -9 the worker node's raylet (by pid): the node is lost as a machine failure would lose it."""
    pids = node_pids(folder.resolve(), "worker", "raylet")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def supervise(folder: Path, interval: float = 2.0) -> None:
    """Bring the worker node back whenever its raylet is gone (leftover processes of the dead node first)."""
    folder = folder.resolve()
    state = load(folder)
    while True:
        time.sleep(interval)
        if node_pids(folder, "worker", "raylet"):
            continue
        print(f"{time.strftime('%H:%M:%S')} worker raylet gone: restarting the worker node", flush=True)
        _kill_node(folder, "worker")
        try:
            start_worker(folder, state)
            print(f"{time.strftime('%H:%M:%S')} worker node back", flush=True)
        except Exception as exc:  # noqa: BLE001 - try again next round
            print(f"restart failed: {exc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "env", "run", "kill-worker", "supervise"])
    parser.add_argument("--state", default=".reelflow/cluster", help="state folder (ports, pids, logs)")
    parser.add_argument("--videos", type=int, default=0, help="run: synthetic films (0 = the profile's)")
    for name in ("s3", "mlflow", "prefect", "ray"):
        parser.add_argument(f"--{name}-port", type=int, default=0, help="0 = a free port")
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    opts = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    folder = Path(opts.state)
    if opts.command == "up":
        state = up(folder, {k: getattr(opts, f"{k}_port") for k in ("s3", "mlflow", "prefect", "ray")})
        print(f"S3 {state['s3']}  MLflow {state['mlflow']}  Prefect {state['prefect']}  Ray {state['ray']}\n"
              f"state and logs: {state['folder']}")
    elif opts.command == "down":
        down(folder)
    elif opts.command == "env":
        print("\n".join(f"export {k}={v}" for k, v in base_env(load(folder)).items()))
    elif opts.command == "kill-worker":
        print(kill_worker(folder))
    elif opts.command == "supervise":
        supervise(folder)
    else:  # run: reelflow on the topology, with the profile's endpoints set to this cluster's ports
        state = load(folder)
        args = rest or ["run"]
        env = {**os.environ, **base_env(state)}
        if opts.videos and args[0] == "run":  # the synthetic corpus, rendered into the S3 run root
            args += ["--set", f"corpus.videos={opts.videos}"]
        # this interpreter's flows.cli, not the console script: the checkout on sys.path is the one that runs
        cmd = [sys.executable, "-m", "flows.cli", *args, "--profile", "cluster-local", *overrides(state)]
        return subprocess.run(cmd, env=env).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
