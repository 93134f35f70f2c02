"""Fail before work: a bad input, model path, checkpoint, endpoint or S3 credential stops the run
before its first stage, within 10 s, with one line naming the setting and the fix."""

import os
import socket
import subprocess
import sys
import time

import pytest
from s3_server import moto_s3

from flows.preflight import PreflightError, preflight
from infra import storage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "reelflow-preflight-test"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


def _fails(cfg, setting: str, fix: str) -> str:
    import models.dit  # noqa: F401  (torch's one-time import is not the check's cost)

    started = time.time()
    with pytest.raises(PreflightError) as caught:
        preflight(cfg)
    message = str(caught.value)
    assert time.time() - started < 10
    assert message.startswith(f"{setting}:") and fix in message and "\n" not in message
    return message


def test_each_setting_fails_fast_with_its_name_and_fix(make_cfg, tmp_path):
    _fails(make_cfg(f"input={tmp_path / 'missing'}"), "input", "pass --input")
    port = _closed_port()
    _fails(make_cfg(f"tracking.mlflow_uri=http://127.0.0.1:{port}"), "tracking.mlflow_uri", "start the MLflow server")
    _fails(make_cfg(f"prefect.api_url=http://127.0.0.1:{port}/api"), "prefect.api_url", "start the Prefect server")
    (tmp_path / "ckpt").mkdir()
    _fails(make_cfg(f"train.base_checkpoint={tmp_path / 'ckpt'}"), "train.base_checkpoint", "model_index.json")
    _fails(make_cfg(f"stages.score.aesthetic.head_path={tmp_path / 'head.pt'}"),
           "stages.score.aesthetic.head_path", "does not exist")
    preflight(make_cfg())  # the defaults need nothing from outside


def test_s3_bucket_and_credentials_are_checked(make_cfg, monkeypatch):
    with moto_s3(monkeypatch, BUCKET) as (endpoint, _):
        try:
            preflight(make_cfg(f"storage.run_root=s3://{BUCKET}/runs", f"storage.s3_endpoint_url={endpoint}"))
            _fails(make_cfg("storage.run_root=s3://no-such-bucket-here/runs", f"storage.s3_endpoint_url={endpoint}"),
                   "storage.run_root", "create the bucket")
            _fails(make_cfg(f"input=s3://{BUCKET}/raw", f"storage.s3_endpoint_url=http://127.0.0.1:{_closed_port()}"),
                   "input", "storage.s3_endpoint_url")
        finally:
            storage.configure_storage(None)
            monkeypatch.delenv("REELFLOW_S3_ENDPOINT_URL", raising=False)


def test_cli_stops_before_any_run_folder(tmp_path):
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--input", str(tmp_path / "nope"), "--audit", "off",
         "--set", f"storage.run_root={runs}", "--set", f"state_dir={tmp_path / 'state'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "input:" in done.stderr and "does not exist" in done.stderr
    assert not runs.exists(), "nothing is created before the checks pass"
