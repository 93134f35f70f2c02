"""Shared fixtures. Prefect reads its settings at import: point it at a private home first."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings

_STATE = tempfile.mkdtemp(prefix="reelflow-test-state-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_STATE, "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # loaded CI machines
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_STATE, "mpl"))
# Under `make test` two test processes share the cores with the Ray workers and servers they start: a torch
# (OpenMP) pool of one thread per core in each of them oversubscribes the machine, and its threads then spin
# on each other (a tiny captioner fine-tune measured 12x slower at load 9). One thread per test process, and
# for the `reelflow` subprocesses the tests start.
_ONE_THREAD = bool(os.environ.get("PYTEST_XDIST_WORKER"))
if _ONE_THREAD:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from infra.config import PipelineConfig, load_config  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Test modules set their own thread counts at import; in a parallel run every test gets one thread."""
    if not _ONE_THREAD:
        yield
        return
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture
def make_cfg(tmp_path):
    """A tiny-profile config whose every path lives under this test's tmp dir."""

    def build(*overrides: str) -> PipelineConfig:
        return load_config(
            "tiny",
            [f"storage.run_root={tmp_path / 'runs'}", f"state_dir={tmp_path / 'state'}", *overrides],
        )

    return build


# One Prefect API server for the whole session (the controller's, inherited by the xdist workers and
# every `reelflow` subprocess a test starts), instead of a temporary server started by each process that
# runs a flow: each of those costs about 9 CPU-seconds to start, and the end-to-end tests start many.
# A test that brings its own server (the browser tests) sets PREFECT_API_URL itself.
_PREFECT_SERVER: subprocess.Popen | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_prefect_server() -> None:
    global _PREFECT_SERVER
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = open(os.path.join(_STATE, "prefect-server.log"), "wb")
    # The command and environment Prefect's own temporary server uses (prefect.server.api.server), once.
    import prefect

    app_dir = str(prefect.__module_path__.parent)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory",
                             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "error", "--lifespan", "on"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "PREFECT_UI_ENABLED": "0",
                                                         "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    _PREFECT_SERVER = proc
                    os.environ["PREFECT_API_URL"] = url
                    return
        except OSError:
            time.sleep(0.3)
    # Not fatal: every process then starts its own temporary server, as outside the tests.
    _stop(proc)
    warnings.warn(f"the tests' Prefect server did not start (log: {log.name}); flows use temporary servers",
                  stacklevel=2)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def pytest_configure(config):
    if not (os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("PREFECT_API_URL") or config.option.collectonly):
        _start_prefect_server()


def pytest_unconfigure(config):
    if _PREFECT_SERVER is not None:
        _stop(_PREFECT_SERVER)


# The test files that take longest (end-to-end runs, measured in the suite on 2 cores), longest first: the two
# test processes take whole files (--dist loadfile), and handing out the long ones first leaves only short
# files for the end, so neither process waits on the other's last long file.
_LONGEST_FIRST = ("test_faults_e2e.py", "test_train_engines.py", "test_report_e2e.py", "test_pipeline_e2e.py",
                  "test_ui_screenshots.py", "test_latents.py", "test_resume_kill.py", "test_cluster_gpu_suite.py",
                  "test_filters.py", "test_df_memory.py", "test_cluster_storage.py", "test_readme_commands.py",
                  "test_pairs.py", "test_gates.py", "test_captioner.py", "test_generate_cli.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept
