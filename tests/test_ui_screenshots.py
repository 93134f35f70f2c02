"""What the people watching a run see, in a real browser: a tiny curation run (the whole funnel, every gate)
recorded by a real `prefect server` and read by a real `mlflow server`; Playwright drives Debian's Chromium
over the MLflow parent run and the Prefect flow runs, checks that the funnel, the stage names and the stage
logs are on screen, and saves the pages as PNGs under benchmarks/results/ui/."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from chromium import ARGS, chromium_path

from flows.summary import TRAINING_VIEW
from infra.run_summary import funnel, published

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "ui"
RUN_ID = "ui"
# A small corpus; the gates record their bad-case rates (their pass/fail logic has tests/test_audit*.py).
SMALL = ("corpus.videos=2", "corpus.width=160", "corpus.height=90", "corpus.shots_per_video=[4,5]",
         *(f"audit.gates.{g}.max_bad_rate=1" for g in ("D_256p", "D_360p", "D_540p", "D_540p_sft", "D_720p_sft")))
CURATION = ("ingest", "segment", "clips", "score", "caption", "D_256p", "D_360p", "D_540p", "D_post", "D_540p_sft",
            "D_720p_sft")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, log: Path, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not up after {seconds:.0f}s:\n{log.read_text()[-2000:]}")


def _post(url: str, body: dict) -> list[dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


@pytest.fixture
def servers(tmp_path):
    """Starts servers on free ports; every process started here is stopped (its process group) afterwards."""
    procs = []

    def start(name: str, cmd: list[str], env: dict, health: str) -> None:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        _wait(health, proc, log)

    yield start
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.timeout(2400)  # ~9 min at load 40 on 2 cores (the run ~8.5 min); over 15 min when more loaded
def test_mlflow_and_prefect_show_the_run_at_a_glance(tmp_path, servers):
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    prefect_port, mlflow_port = _port(), _port()
    prefect = f"http://127.0.0.1:{prefect_port}"
    servers("prefect", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                        str(prefect_port)],
            {**base_env, "PREFECT_HOME": str(tmp_path / "prefect-server"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": f"{prefect}/api"}, f"{prefect}/api/health")

    runs, state = tmp_path / "runs", tmp_path / "state"
    cmd = [sys.executable, "-m", "flows.cli", "run", "--audit", "simulated", "--run-id", RUN_ID, "--until", "D_720p_sft",
           "--set", f"storage.run_root={runs}", "--set", f"state_dir={state}", *(f"--set={s}" for s in SMALL)]
    env = {**base_env, "PREFECT_API_URL": f"{prefect}/api", "PREFECT_HOME": str(state / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "REELFLOW_MLFLOW_UI": f"http://127.0.0.1:{mlflow_port}"}
    started = time.time()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_seconds = time.time() - started
    truth = funnel(published(str(runs / RUN_ID)))  # what the run published: the numbers the pages must show
    assert list(truth) == ["videos", "shots", "clips", *(s for s in CURATION if s.startswith("D_"))]

    db = runs / "mlflow.db"
    mlflow = f"http://127.0.0.1:{mlflow_port}"
    servers("mlflow", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
                       "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
            {**base_env, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}, f"{mlflow}/health")
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    parent = client.search_runs(experiments, f"tags.`reelflow.run_id` = '{RUN_ID}' and tags.`reelflow.kind` = 'pipeline'")[0]
    assert {"summary/funnel.png", "summary/timeline.png", "summary/summary.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "summary")}

    funnel_text = " → ".join(f"{k} {v}" for k, v in truth.items())
    flow_runs = {r["name"]: r["id"] for r in _post(f"{prefect}/api/flow_runs/filter", {})}
    assert {RUN_ID, f"curate-{RUN_ID}"} <= set(flow_runs)
    artifact = _post(f"{prefect}/api/artifacts/filter", {"artifacts": {"key": {"any_": [f"pipeline-{RUN_ID}"]}}})[0]
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1100})

        page.goto(f"{mlflow}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}{TRAINING_VIEW}")
        page.get_by_text("Data funnel").first.wait_for(timeout=120_000)
        for button in ("Close", "Expand description", "Load more"):  # the assistant pane; the whole description
            found = page.get_by_role("button", name=button, exact=True)
            if found.count():
                found.first.click()
        page.get_by_text("Show less").first.wait_for(timeout=30_000)
        time.sleep(2)  # the child-run list re-renders after "Load more"
        text = page.inner_text("body")
        assert "Model training" in text and funnel_text in text, text[:3000]
        assert all(stage in text for stage in CURATION), text[:3000]
        assert "gate D_540p (simulated)" in text  # child runs by stage name
        page.screenshot(path=str(OUT / "mlflow_parent_run.png"), full_page=True)
        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text("summary", exact=True).first.click()
        page.get_by_text("funnel.png", exact=True).first.click()
        page.get_by_text("summary/funnel.png").first.wait_for(timeout=60_000)
        page.locator("img[src^='blob:']").first.wait_for(timeout=60_000)  # the chart, fetched and shown
        page.screenshot(path=str(OUT / "mlflow_funnel_chart.png"), full_page=True)

        page.goto(f"{prefect}/runs/flow-run/{flow_runs[f'curate-{RUN_ID}']}")
        line = page.get_by_text("stage segment").first  # a stage's own log line, shipped to the flow run
        line.wait_for(timeout=120_000)
        assert line.is_visible()
        text = page.inner_text("body")  # each log line names its task run: the stage
        assert all(stage in text for stage in CURATION) and "gate D_540p" in text, text[:3000]
        page.screenshot(path=str(OUT / "prefect_flow_run_logs.png"), full_page=True)

        page.goto(f"{prefect}/runs/flow-run/{flow_runs[RUN_ID]}")
        summary_line = page.get_by_text(f"pipeline {RUN_ID}: finished").first
        summary_line.wait_for(timeout=120_000)
        assert funnel_text.replace(" → ", " -> ") in page.inner_text("body")
        page.screenshot(path=str(OUT / "prefect_pipeline_run.png"), full_page=True)

        page.goto(f"{prefect}/artifacts/artifact/{artifact['id']}")
        page.get_by_text("Data funnel").first.wait_for(timeout=120_000)
        text = page.inner_text("body")
        assert funnel_text in text and all(stage in text for stage in CURATION), text[:3000]
        assert "MLflow runs" in text and page.get_by_role("link", name="gate D_540p").count() >= 1
        page.screenshot(path=str(OUT / "prefect_flow_run_artifact.png"), full_page=True)
        browser.close()
    (OUT / "screenshots.json").write_text(json.dumps({
        "run": " ".join(["reelflow", *cmd[3:]]).replace(str(tmp_path), "<tmp>"), "run_seconds": round(run_seconds, 1),
        "funnel": truth, "pngs": sorted(p.name for p in OUT.glob("*.png"))}, indent=1) + "\n")
