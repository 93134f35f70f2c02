"""Human labels of the ``pairs`` stage's pending human pairs (report section 3.4.1), for the reward stage.

``human_labels(ctx, pairs)`` opens the pair audit of the published pairs manifest (its pending human
pairs, stored once in the run's store: ``infra.pair_audit_store``) and returns the latest verdict of
each labelled pair. How verdicts arrive follows the audit mode (``audit.mode``, as at the dataset gates):

- ``interactive``: reviewers use the pairwise page of ``reelflow audit serve RUN``; the call waits until
  every pending pair is labelled (``audit.poll_s``, ``audit.wait_timeout_s``; a re-run resumes, no verdict
  is lost);
- ``file`` (``reelflow run --audit verdicts.json``): labels come from the file, either a mapping
  ``{pair_id: {"label": "a"|"b"|"tie", "failure": <motion failure>|null}}`` or, in a file that also holds
  the gates' verdicts, that mapping under the key ``"pairs"``; a pair labelled before keeps its label;
- ``simulated`` / ``off``: no wait; whatever was labelled is returned.

``apply_labels(df, labels)`` then fills ``label`` / ``failure`` and ``label_source="human"``.
"""

from __future__ import annotations

import json
import logging
import os

import pandas as pd

from infra import storage
from infra.audit_store import audit_uri
from infra.audit_wait import AuditIncomplete, wait_for_labels
from infra.config import value_hash
from infra.config_datasets import AuditConfig
from infra.manifest import Manifest
from infra.pair_audit_store import (
    PAIR_AUDITS,
    PairAuditSample,
    PairVerdict,
    PairVerdictStore,
    logged,
    open_pair_audit,
    pair_state,
    save_logged,
)
from infra.stage import StageContext

log = logging.getLogger("reelflow.pair_audit")


def file_labels(path: str) -> list[PairVerdict]:
    """The pair labels of a verdicts JSON file (see the module docstring for its two shapes)."""
    data = json.loads(storage.read_text(path))
    if not isinstance(data, dict):
        return []  # a list is the gates' form: no pair labels in it
    section = data["pairs"] if isinstance(data.get("pairs"), dict) else {k: v for k, v in data.items() if isinstance(v, dict)}
    reviewer = os.path.basename(path)
    return [PairVerdict.model_validate({"reviewer": reviewer, **value, "pair_id": pair_id, "source": "file"})
            for pair_id, value in section.items()]


def _supply(run_uri: str, sample: PairAuditSample, store: PairVerdictStore, path: str) -> None:
    have = store.latest()
    wanted = {p.pair_id for p in sample.pairs}
    for verdict in file_labels(path):
        if verdict.pair_id in wanted and verdict.pair_id not in have:
            store.append(verdict)
            have[verdict.pair_id] = verdict
    missing = sorted(wanted - set(have))
    if missing:
        raise AuditIncomplete(
            f"pair audit {sample.audit_id}: {path} has no label for {len(missing)} of {len(wanted)} pending human pairs "
            f"(e.g. {missing[:3]}); the pairs are listed in {audit_uri(run_uri, sample.audit_id, PAIR_AUDITS)}/sample.json. "
            "Add them to the file, or label them with: reelflow audit serve RUN")


def _wait(sample: PairAuditSample, store: PairVerdictStore, cfg: AuditConfig, run_id: str) -> None:
    wait_for_labels(lambda: pair_state(sample, store.latest()), f"pair audit {sample.audit_id}", "human pairs",
                    run_id, cfg, log)


def labels_key(labels: dict[str, dict]) -> str:
    """A short hash of the labels: the reward stage's ``key_extra``, so new labels re-train it."""
    return value_hash(labels)


def _log(ctx: StageContext, mode: str, sample: PairAuditSample, verdicts: dict[str, PairVerdict]) -> None:
    """One MLflow child run per new set of labels: counts and the verdict table."""
    key = labels_key({k: v.model_dump(exclude={"at"}) for k, v in verdicts.items()})
    if logged(ctx.run_uri, sample.audit_id) == key:
        return
    state = pair_state(sample, verdicts)
    tags = {"reelflow.run_id": ctx.run_id, "reelflow.git_sha": ctx.code_version, "reelflow.profile": ctx.profile,
            "reelflow.audit_mode": mode}
    with ctx.tracker.child(ctx.parent_run, "audit_pairs", tags) as rid:
        ctx.tracker.log_params(rid, {"audit_id": sample.audit_id, "mode": mode, "pairs_fingerprint": sample.fingerprint})
        ctx.tracker.log_metrics(rid, {"pending": state.total, "labelled": state.labelled, "better_a": state.better_a,
                                      "better_b": state.better_b, "ties": state.ties,
                                      "tie_share": state.ties / max(state.labelled, 1)}
                                | {f"failure.{k}": n for k, n in state.by_failure.items()})
        rows = [v.model_dump() for v in verdicts.values()]
        columns = list(PairVerdict.model_fields)
        ctx.tracker.client.log_table(rid, data=pd.DataFrame(rows, columns=columns), artifact_file="pair_verdicts.json")
    save_logged(ctx.run_uri, sample.audit_id, key)


def human_labels(source: StageContext | str, pairs: Manifest, audit: AuditConfig | None = None,
                 wait: bool | None = None) -> dict[str, dict]:
    """``{pair_id: {"label", "failure", "reviewer"}}`` for the labelled pending human pairs of ``pairs``.

    ``source``: the stage context (audit config from ``ctx.cfg.audit``; labels logged to MLflow) or a run
    URI (read-only unless ``audit`` is given). ``wait``: None = wait only in interactive mode."""
    ctx = source if isinstance(source, StageContext) else None
    run_uri = ctx.run_uri if ctx else storage.normalize(source)
    audit = audit or (ctx.cfg.audit if ctx else None)
    mode = audit.mode if audit else "off"
    sample = open_pair_audit(run_uri, pairs)
    if sample is None:
        return {}
    store = PairVerdictStore(run_uri, sample.audit_id)
    if mode == "file":
        _supply(run_uri, sample, store, audit.verdicts_file)
    if wait if wait is not None else mode == "interactive":
        _wait(sample, store, audit or AuditConfig(), ctx.run_id if ctx else run_uri)
    latest = store.latest()
    verdicts = {p.pair_id: latest[p.pair_id] for p in sample.pairs if p.pair_id in latest}
    if ctx is not None and verdicts:
        _log(ctx, mode, sample, verdicts)
    return {k: {"label": v.label, "failure": v.failure, "reviewer": v.reviewer} for k, v in verdicts.items()}


def apply_labels(df: pd.DataFrame, labels: dict[str, dict]) -> pd.DataFrame:
    """A copy of the pairs table with ``label`` / ``failure`` filled and ``label_source="human"`` for
    the pairs in ``labels``; other rows unchanged."""
    out = df.copy()
    for column, source in (("label", "label"), ("failure", "failure"), ("label_source", None)):
        # Built as Python lists: a tie's failure stays None (pandas would turn it into NaN).
        out[column] = pd.Series([(labels[p][source] if source else "human") if p in labels else value
                                 for p, value in zip(out["pair_id"], out[column], strict=True)],
                                index=out.index, dtype=object)
    return out
