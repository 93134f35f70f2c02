"""Durable state of the pairwise audit: reviewers label the ``pending`` human pairs of a run's ``pairs``
stage Better A / Better B / Tie, with the worse video's motion failure (report section 3.4.1).

Layout, beside the dataset gates' ``audits/``: ``{run_uri}/pair_audits/pairs-{fingerprint8}/sample.json``
(the pending pairs of one published ``pairs`` manifest, written once) and ``verdicts/`` with one
durable file per verdict (``infra.audit_store.VerdictStore``: temp file, fsync, rename; the latest
verdict of a pair wins, the history stays). A re-published ``pairs`` stage has another fingerprint and
so another audit: labels of other videos never carry over.
"""

from __future__ import annotations

import json
import time
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from infra import manifest as mf
from infra import storage
from infra.audit_models import ReviewerNote
from infra.audit_store import ID_RE, RESULT, SAMPLE, VerdictStore, audit_uri, write_durably
from infra.config_post import MOTION_FAILURES
from infra.manifest import Manifest, load_success, read_table

PAIR_AUDITS = "pair_audits"
# What a reviewer is shown, by the ``kind`` of the pairs table (tasks/post/pairs.py).
PAIR_KINDS = {"human": "two text-to-video samples of the same prompt from the same checkpoint, different seeds "
                       "(neither is real footage; the side of each is random)"}
PAIRS_STAGE = "pairs"
MotionFailure = Literal["excess motion", "insufficient motion", "subject distortion", "local detail damage",
                        "physics violation", "unnatural motion"]
assert MotionFailure.__args__ == MOTION_FAILURES
Label = Literal["a", "b", "tie"]


class PairVerdict(ReviewerNote):
    pair_id: str = Field(pattern=ID_RE.pattern)
    label: Label
    failure: MotionFailure | None = None  # what is wrong with the worse video; none for a tie
    source: Literal["human", "file"] = "human"

    @model_validator(mode="after")
    def _failure(self) -> PairVerdict:
        if self.label != "tie" and self.failure is None:
            raise ValueError(f"better {self.label}: name the worse video's failure, one of: {', '.join(MOTION_FAILURES)}")
        if self.label == "tie":
            self.failure = None
        return self


class PendingPair(BaseModel):
    pair_id: str
    kind: str = "human"  # what the two videos are: see PAIR_KINDS
    generator: str | None = None  # the checkpoint that generated both
    prompt: str | None = None
    a_uri: str  # relative to the run root (older samples: absolute)
    b_uri: str
    a_desc: str | None = None  # kept for provenance, never shown: the page must not hint at a side
    b_desc: str | None = None


class PairAuditSample(BaseModel):
    audit_id: str
    stage_uri: str  # the stage folder, relative to the run root
    fingerprint: str
    created_at: float = Field(default_factory=time.time)
    pairs: list[PendingPair]


class PairAuditState(BaseModel):
    audit_id: str
    total: int
    labelled: int
    better_a: int
    better_b: int
    ties: int
    by_failure: dict[str, int]
    complete: bool


class PairVerdictStore(VerdictStore):
    model = PairVerdict
    key = "pair_id"
    root = PAIR_AUDITS


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
    uri = storage.join(audit_uri(run_uri, audit_id, PAIR_AUDITS), SAMPLE)
    return PairAuditSample.model_validate_json(storage.read_text(uri)) if storage.exists(uri) else None


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
    write_durably(storage.join(audit_uri(run_uri, audit_id, PAIR_AUDITS), SAMPLE), sample.model_dump_json(indent=1))
    return sample


def open_run_pair_audit(run_uri: str) -> PairAuditSample | None:
    """The audit of the run's published ``pairs`` stage, if it left pairs pending (the web app's view)."""
    manifest = load_success(storage.join(run_uri, PAIRS_STAGE))
    return open_pair_audit(run_uri, manifest) if manifest is not None and manifest.stage == PAIRS_STAGE else None


def list_pair_audits(run_uri: str) -> list[PairAuditSample]:
    root = storage.join(run_uri, PAIR_AUDITS)
    if not storage.exists(root):
        return []
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in storage.filesystem(root).ls(storage._path(root), detail=False))
    found = [load_pair_sample(run_uri, n) for n in names if ID_RE.match(n)]
    return sorted((s for s in found if s is not None), key=lambda s: s.created_at)


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
    write_durably(storage.join(audit_uri(run_uri, audit_id, PAIR_AUDITS), RESULT), json.dumps({"logged": key}))


def logged(run_uri: str, audit_id: str) -> str | None:
    uri = storage.join(audit_uri(run_uri, audit_id, PAIR_AUDITS), RESULT)
    return json.loads(storage.read_text(uri))["logged"] if storage.exists(uri) else None
