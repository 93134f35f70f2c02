"""Durable state of the pairwise audit: reviewers label the ``pending`` human pairs of a run's ``pairs``
stage Better A / Better B / Tie, with the worse video's motion failure (report section 3.4.1).

Layout (``infra.review_store``, kind ``PAIRS``), beside the dataset gates' ``audits/``:
``{run_uri}/pair_audits/pairs-{fingerprint8}/sample.json`` (the pending pairs of one published ``pairs``
manifest, written once) and ``verdicts/`` with one durable file per verdict (temp file, fsync, rename;
the latest verdict of a pair wins, the history stays). A re-published ``pairs`` stage has another fingerprint and
so another audit: labels of other videos never carry over.
"""

from __future__ import annotations

import json

from infra import manifest as mf
from infra import storage
from infra.audit_models import (  # noqa: F401  (the pair records, re-exported for their callers)
    PAIR_KINDS,
    Label,
    MotionFailure,
    PairAuditSample,
    PairAuditState,
    PairVerdict,
    PendingPair,
)
from infra.manifest import Manifest, load_success, read_table
from infra.review_store import (
    PAIRS,
    RESULT,
    VerdictStore,
    list_reviews,
    load_review,
    review_uri,
    save_review,
    write_durably,
)

PAIR_AUDITS = PAIRS.root
PAIRS_STAGE = "pairs"


class PairVerdictStore(VerdictStore):
    kind = PAIRS


def pending_pairs(manifest: Manifest) -> list[PendingPair]:
    """The pairs that wait for a human: human pairs published ``pending``, usable (no error, not discarded)."""
    df = read_table(manifest)
    keep = (df["kind"] == "human") & (df["label_source"] == "pending") & df["error"].isna()
    keep &= ~df["discarded"].fillna(False).astype(bool)
    root = mf.run_root_of(manifest.uri)
    return [PendingPair.model_validate(r | {"a_uri": mf.relative_to(r["a_uri"], root), "b_uri": mf.relative_to(r["b_uri"], root)})
            for r in df[keep][list(PendingPair.model_fields)].to_dict("records")]


def pair_audit_id(manifest: Manifest) -> str:
    return f"pairs-{manifest.fingerprint[:8]}"


def load_pair_sample(run_uri: str, audit_id: str) -> PairAuditSample | None:
    return load_review(run_uri, PAIRS, audit_id)


def open_pair_audit(run_uri: str, manifest: Manifest) -> PairAuditSample | None:
    """The pair audit of a published ``pairs`` manifest (written once), or None when no pair is pending."""
    audit_id = pair_audit_id(manifest)
    existing = load_pair_sample(run_uri, audit_id)
    if existing is not None:
        return existing
    pairs = pending_pairs(manifest)
    if not pairs:
        return None
    sample = PairAuditSample(audit_id=audit_id, stage_uri=manifest.stage, fingerprint=manifest.fingerprint, pairs=pairs)
    save_review(run_uri, PAIRS, sample)
    return sample


def open_run_pair_audit(run_uri: str) -> PairAuditSample | None:
    """The audit of the run's published ``pairs`` stage, if it left pairs pending (the web app's view)."""
    manifest = load_success(storage.join(run_uri, PAIRS_STAGE))
    return open_pair_audit(run_uri, manifest) if manifest is not None and manifest.stage == PAIRS_STAGE else None


def list_pair_audits(run_uri: str) -> list[PairAuditSample]:
    return list_reviews(run_uri, PAIRS)


def pair_state(sample: PairAuditSample, latest: dict[str, PairVerdict]) -> PairAuditState:
    given = [latest[p.pair_id] for p in sample.pairs if p.pair_id in latest]
    by_failure: dict[str, int] = {}
    for v in given:
        if v.failure:
            by_failure[v.failure] = by_failure.get(v.failure, 0) + 1
    return PairAuditState(
        audit_id=sample.audit_id, total=len(sample.pairs), labelled=len(given),
        better_a=sum(v.label == "a" for v in given), better_b=sum(v.label == "b" for v in given),
        ties=sum(v.label == "tie" for v in given), by_failure=by_failure, complete=len(given) == len(sample.pairs))


def save_logged(run_uri: str, audit_id: str, key: str) -> None:
    """Remember which set of labels was logged to MLflow (``key``), so a re-run logs only new ones."""
    write_durably(storage.join(review_uri(run_uri, audit_id, PAIR_AUDITS), RESULT), json.dumps({"logged": key}))


def logged(run_uri: str, audit_id: str) -> str | None:
    uri = storage.join(review_uri(run_uri, audit_id, PAIR_AUDITS), RESULT)
    return json.loads(storage.read_text(uri))["logged"] if storage.exists(uri) else None
