"""MLflow tracking: one parent run per pipeline run, one child run per stage (docs/architecture.md).

Everything goes through an explicit ``MlflowClient`` and run ids rather than mlflow's global
"active run" stack: stages run inside Prefect task threads, and explicit ids keep parent/child
wiring correct whatever thread logs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.utils.time import get_current_time_millis

from infra.tracking_store import ROOT_TAG, relocate, sqlite_path

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
_MAX_PARAM = 6000  # mlflow's param value limit
# MLflow 3 opens an experiment without this tag in its GenAI (traces) view; this one trains models.
# Values as the MLflow 3 UI's ExperimentKind enum spells them.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
NOTE = "mlflow.note.content"  # the run page's Description
# MLflow reserves the alias "latest" (``models:/NAME/latest`` already resolves to the highest version), so the
# newest checkpoint of any stage carries this alias instead, visible beside the stage aliases in the UI.
LATEST = "newest"


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def default_tracking_uri(run_root: str, state_dir: str) -> tuple[str, str]:
    """(tracking uri, artifact root): sqlite + files under the local run root, else the state dir."""
    base = run_root if "://" not in run_root else state_dir
    base = os.path.abspath(base)
    os.makedirs(base, exist_ok=True)
    return f"sqlite:///{base}/mlflow.db", f"file://{base}/mlartifacts"


def flatten(prefix: str, value, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:_MAX_PARAM]
    return out


class Tracker:
    """Thin, thread-safe facade over one MLflow experiment."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None = None):
        # Quiet mlflow's alembic migration chatter on a fresh sqlite store.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        db = sqlite_path(tracking_uri)
        if db and relocate(db):  # a copied or moved run root: point the recorded locations at where it is now
            from mlflow.tracking._tracking_service import utils as tracking_utils

            # MLflow keeps each run's artifact repository per process, keyed by run id: forget the old folder's.
            getattr(tracking_utils, "_artifact_repos_cache", {}).clear()
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        tags = {**EXPERIMENT_KIND, **({ROOT_TAG: os.path.dirname(os.path.abspath(db))} if db else {})}
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            if tracking_uri.startswith(("http://", "https://")):
                artifact_root = None  # a tracking server stores (or proxies) artifacts where it is configured to
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_root, tags=tags)
        else:
            self.experiment_id = exp.experiment_id
            for key, value in tags.items():
                if exp.tags.get(key) != value:
                    self.client.set_experiment_tag(self.experiment_id, key, value)

    def find_parent(self, run_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`reelflow.run_id` = '{run_id}' and tags.`reelflow.kind` = 'pipeline'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_parent(self, run_id: str, params: dict, tags: dict[str, str]) -> str:
        """The pipeline's parent run; a rerun of the same run id reopens the same parent."""
        existing = self.find_parent(run_id)
        if existing:
            self.client.update_run(existing, status="RUNNING")
            return existing
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_id,
            tags={"reelflow.kind": "pipeline", "reelflow.run_id": run_id, **tags},
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def end(self, mlflow_run_id: str, ok: bool) -> None:
        status = RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED)
        self.client.set_terminated(mlflow_run_id, status=status)

    def describe(self, rid: str, text: str) -> None:
        """The run page's Description (markdown)."""
        self.client.set_tag(rid, NOTE, text[:5000])

    @contextmanager
    def child(self, parent: str, stage: str, tags: dict[str, str]) -> Iterator[str]:
        run = self.client.create_run(
            self.experiment_id,
            run_name=display_name(stage),
            tags={"mlflow.parentRunId": parent, "reelflow.kind": "stage", "reelflow.stage": stage, **tags},
        )
        rid = run.info.run_id
        try:
            yield rid
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}"[:1000]
            self.client.set_tag(rid, "reelflow.error", reason)
            self.describe(rid, f"**{display_name(stage)} failed**: {reason}")
            self.end(rid, ok=False)
            raise
        self.end(rid, ok=True)
        self._supersede(parent, stage, rid)

    def _supersede(self, parent: str, stage: str, rid: str) -> None:
        """Earlier failed (or killed, still "RUNNING") attempts of ``stage`` under ``parent`` are marked superseded
        by the one that succeeded, so the run list shows one live result per stage."""
        attempts = self.client.search_runs(
            [self.experiment_id], max_results=100,
            filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and tags.`reelflow.stage` = '{stage}'")
        for old in attempts:
            if old.info.run_id == rid or old.info.status == "FINISHED" or old.data.tags.get("reelflow.superseded_by"):
                continue
            killed = old.info.status == "RUNNING"  # its process was killed: it will never end by itself
            if killed:
                self.client.set_terminated(old.info.run_id, status="KILLED")
            self.client.set_tag(old.info.run_id, "reelflow.superseded_by", rid)
            self.client.update_run(old.info.run_id, name=f"{display_name(stage)} (superseded)")
            reason = old.data.tags.get("reelflow.error") or ("interrupted (its process ended)" if killed else "failed")
            self.describe(old.info.run_id, f"**Superseded** by run {rid}, which resumed and succeeded.\n\n"
                                           f"This attempt: {reason}")

    def log_params(self, rid: str, params: dict) -> None:
        flat = flatten("", params, {})
        items = [Param(k, v) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):  # mlflow batch limit
            self.client.log_batch(rid, params=items[i : i + 100])

    def log_metrics(self, rid: str, metrics: dict[str, float], step: int = 0) -> None:
        now = get_current_time_millis()
        items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items()) if _is_number(v)]
        for i in range(0, len(items), 500):
            self.client.log_batch(rid, metrics=items[i : i + 500])

    def log_artifact(self, rid: str, local_path: str, artifact_path: str | None = None) -> None:
        """Logs ``local_path``; an mp4 also gets an upscaled copy and a frame strip beside it (infra/viewable.py),
        because a 64x32 training sample is invisible at its own size."""
        self.client.log_artifact(rid, local_path, artifact_path)
        if local_path.endswith(".mp4") and os.path.isfile(local_path):
            import tempfile

            from infra.viewable import viewable

            with tempfile.TemporaryDirectory() as out:
                try:
                    extras = viewable(local_path, out)
                except (OSError, ValueError) as exc:  # a sample that cannot be decoded is still logged as is
                    log.warning("no viewable copy of %s: %s", local_path, exc)
                    extras = []
                for extra in extras:
                    self.client.log_artifact(rid, extra, artifact_path)

    def log_input(self, rid: str, sample: pd.DataFrame, source_uri: str, name: str, digest: str) -> None:
        """Record a manifest as an MLflow dataset input (schema from a sample, digest = fingerprint)."""
        with warnings.catch_warnings():  # schema-inference hints meant for model signatures
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(sample, source=source_uri, name=name, digest=digest)
            entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "input")])
        self.client.log_inputs(rid, datasets=[entity])


    def ensure_registered(self, model_name: str, source_uri: str, rid: str | None, alias: str,
                          tags: dict[str, str], description: str = "reelflow checkpoints, one alias per stage") -> str:
        """A model version pointing at a checkpoint folder, with the stage's alias (docs/architecture.md:
        aliases, never registry "stages"); the weights stay where the stage published them. A resumed
        run whose alias already points at this folder registers nothing new."""
        try:
            self.client.get_registered_model(model_name)
        except MlflowException:
            self.client.create_registered_model(model_name, description=description)
        try:
            current = self.client.get_model_version_by_alias(model_name, alias)
            if current.source == source_uri:
                self.client.set_registered_model_alias(model_name, LATEST, current.version)
                return current.version
        except MlflowException:
            pass
        facts = self._version_facts(rid, alias)
        version = self.client.create_model_version(
            model_name, source_uri, run_id=rid, tags={**tags, "reelflow.stage": alias, **facts["tags"]},
            description=facts["description"])
        self.client.set_registered_model_alias(model_name, alias, version.version)
        self.client.set_registered_model_alias(model_name, LATEST, version.version)
        return version.version

    def _version_facts(self, rid: str | None, alias: str) -> dict:
        """Description and tags of a model version: the stage, its run, its metrics and the fingerprints of
        the datasets it was trained on (the run's MLflow dataset inputs)."""
        if not rid:
            return {"description": f"{alias} checkpoint", "tags": {}}
        run = self.client.get_run(rid)
        metrics = {k: v for k, v in sorted(run.data.metrics.items()) if "/" not in k}
        inputs = {d.dataset.name: d.dataset.digest for d in (run.inputs.dataset_inputs if run.inputs else [])}
        tags = {"mlflow_run_id": rid, **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()},
                **{f"dataset.{k}": v for k, v in inputs.items()}}
        lines = [f"{alias} checkpoint from MLflow run {rid} (pipeline run "
                 f"{run.data.tags.get('reelflow.run_id', '?')}, code {run.data.tags.get('reelflow.git_sha', '?')}).",
                 "", "Trained on: " + (", ".join(f"{k} (fingerprint {v})" for k, v in inputs.items()) or "-"), "",
                 "Metrics: " + (", ".join(f"{k}={v:.4g}" for k, v in metrics.items()) or "-")]
        return {"description": "\n".join(lines)[:5000], "tags": tags}


def display_name(stage: str) -> str:
    """The run name a person reads: ``gate D_540p`` for the audit of D_540p, the stage name otherwise."""
    if stage.startswith("audit_"):
        gate = stage[len("audit_"):]
        simulated = gate.endswith("_simulated")
        return f"gate {gate.removesuffix('_simulated')}" + (" (simulated)" if simulated else "")
    return stage


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
