"""`make cluster-up`'s default ports: each one outside the range Ray hands to its worker processes (`ray start`'s
--min-worker-port/--max-worker-port, 10002-19999 by default), which `ray start --head` refuses to share with its
own port and where a worker could take a server's port; and the cluster-local profile names the same ones."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RAY_WORKER_PORTS = range(10002, 20000)


def test_default_cluster_ports_avoid_ray_worker_ports_and_match_the_profile():
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("CLUSTER_PORTS"))
    ports = {name: int(port) for name, port in re.findall(r"--(\w+)-port (\d+)", line)}
    assert set(ports) == {"s3", "mlflow", "prefect", "ray"}, line
    assert not [p for p in ports.values() if p in RAY_WORKER_PORTS], ports
    profile = yaml.safe_load((ROOT / "configs/profiles/cluster-local.yaml").read_text())
    assert profile["storage"]["s3_endpoint_url"].endswith(f":{ports['s3']}")
    assert profile["ray"]["address"].endswith(f":{ports['ray']}")
    assert profile["tracking"]["mlflow_uri"].endswith(f":{ports['mlflow']}")
    assert profile["prefect"]["api_url"].endswith(f":{ports['prefect']}/api")
