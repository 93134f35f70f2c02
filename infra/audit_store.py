"""Durable audit state in the run's store: the sample of each gate and every verdict given.

Layout: ``{run_uri}/audits/{audit_id}/sample.json`` (written once, when the gate opens) and
``verdicts/{ns}-{clip_id}-{rand}.json``, one file per verdict. One object per verdict rather than an
appended JSONL because object stores (s3://) cannot append; locally each file is written to a
temporary name, fsync'd and renamed, so a killed server or flow loses at most the click in flight,
and a half-written verdict never exists under its real name. A clip's latest verdict wins (a
reviewer may change their mind); the full history stays. Imported by the web app (infra) and the
gate (tasks), so it lives in infra.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infra import storage
from infra.config_datasets import REASONS

AUDITS = "audits"
SAMPLE = "sample.json"
RESULT = "result.json"
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
Reason = Literal["black", "static", "text", "mosaic", "effects/stickers", "low quality", "wrong caption", "other"]
assert set(Reason.__args__) == set(REASONS)


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_id: str = Field(pattern=ID_RE.pattern)
    verdict: Literal["good", "bad"]
    reason: Reason | None = None
    note: str = Field("", max_length=500)
    reviewer: str = "unknown"
    source: Literal["human", "file", "simulated"] = "human"
    at: float = Field(default_factory=time.time)

    @model_validator(mode="after")
    def _reason(self) -> Verdict:
        if self.verdict == "bad" and self.reason is None:
            raise ValueError(f"a bad verdict needs a reason, one of: {', '.join(REASONS)}")
        if self.verdict == "good":
            self.reason = None
        return self


class SampledClip(BaseModel):
    clip_id: str
    clip_uri: str | None = None
    caption: str | None = None
    category: str | None = None
    truth: dict | None = None  # simulated mode only: what the corpus truth says about the clip


class AuditSample(BaseModel):
    audit_id: str
    run_id: str
    gate: str
    dataset: str
    dataset_fingerprint: str
    kind: str
    mode: str
    simulated: bool = False
    sample_rate: float
    max_bad_rate: float
    population: int
    tolerate: list[str] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    clips: list[SampledClip]


class GateResult(BaseModel):
    audit_id: str
    gate: str
    total: int
    labelled: int
    bad: int
    bad_rate: float
    max_bad_rate: float
    complete: bool
    passed: bool
    simulated: bool
    by_reason: dict[str, int]
    tolerated: dict[str, int] = Field(default_factory=dict)
    bad_clips: list[dict]

    def summary(self) -> str:
        label = " [SIMULATED from corpus truth]" if self.simulated else ""
        verdict = "PASSED" if self.passed else ("FAILED" if self.complete else "PENDING")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.by_reason.items(), key=lambda kv: -kv[1])) or "none"
        return (f"audit gate {self.gate} {verdict}{label}: {self.bad}/{self.labelled} bad "
                f"({100 * self.bad_rate:.1f}%, must be below {100 * self.max_bad_rate:g}%), "
                f"{self.labelled}/{self.total} labelled; bad cases by reason: {reasons}"
                + (f"; tolerated at this gate: {self.tolerated}" if self.tolerated else ""))


def audits_uri(run_uri: str) -> str:
    return storage.join(run_uri, AUDITS)


def audit_uri(run_uri: str, audit_id: str, root: str = AUDITS) -> str:
    if not ID_RE.match(audit_id):
        raise ValueError(f"not an audit id: {audit_id!r}")
    return storage.join(run_uri, root, audit_id)


def write_durably(uri: str, text: str) -> None:
    if storage.is_remote(uri):
        storage.write_text(uri, text)  # a PUT is atomic
        return
    folder = os.path.dirname(uri)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, uri)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def save_sample(run_uri: str, sample: AuditSample) -> None:
    write_durably(storage.join(audit_uri(run_uri, sample.audit_id), SAMPLE), sample.model_dump_json(indent=1))


def load_sample(run_uri: str, audit_id: str) -> AuditSample | None:
    uri = storage.join(audit_uri(run_uri, audit_id), SAMPLE)
    return AuditSample.model_validate_json(storage.read_text(uri)) if storage.exists(uri) else None


def save_result(run_uri: str, result: GateResult) -> None:
    write_durably(storage.join(audit_uri(run_uri, result.audit_id), RESULT), result.model_dump_json(indent=1))


def load_result(run_uri: str, audit_id: str) -> GateResult | None:
    uri = storage.join(audit_uri(run_uri, audit_id), RESULT)
    return GateResult.model_validate_json(storage.read_text(uri)) if storage.exists(uri) else None


def list_audits(run_uri: str) -> list[AuditSample]:
    root = audits_uri(run_uri)
    if not storage.exists(root):
        return []
    fs = storage.filesystem(root)
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(storage._path(root), detail=False))
    found = [load_sample(run_uri, n) for n in names if ID_RE.match(n)]
    return sorted((s for s in found if s is not None), key=lambda s: s.created_at)


class VerdictStore:
    """Append-only verdicts of one audit (one durable file each). ``model`` / ``key``: what a verdict is
    and which field names its item (a clip here; a pair in ``infra.pair_audit_store``)."""

    model: type[BaseModel] = Verdict
    key = "clip_id"
    root = AUDITS

    def __init__(self, run_uri: str, audit_id: str):
        self.uri = storage.join(audit_uri(run_uri, audit_id, self.root), "verdicts")

    def append(self, verdict: BaseModel) -> None:
        name = f"{time.time_ns():020d}-{getattr(verdict, self.key)}-{uuid.uuid4().hex[:6]}.json"
        write_durably(storage.join(self.uri, name), verdict.model_dump_json())

    def history(self) -> list:
        if not storage.exists(self.uri):
            return []
        fs = storage.filesystem(self.uri)
        paths = sorted(p for p in fs.ls(storage._path(self.uri), detail=False) if p.endswith(".json")
                       and not p.rsplit("/", 1)[-1].startswith("."))
        out = []
        for path in paths:
            uri = f"s3://{path}" if self.uri.startswith("s3://") and not path.startswith("s3://") else path
            out.append(self.model.model_validate_json(storage.read_text(uri)))
        return out

    def latest(self) -> dict:
        return {getattr(v, self.key): v for v in self.history()}  # file names sort by time: the last one wins


def evaluate(sample: AuditSample, latest: dict[str, Verdict]) -> GateResult:
    """The gate's state: passes when every sampled clip is labelled and bad/total < max_bad_rate;
    bad verdicts whose reason the gate tolerates are counted apart."""
    labelled = [latest[c.clip_id] for c in sample.clips if c.clip_id in latest]
    flagged = [v for v in labelled if v.verdict == "bad"]
    bad = [v for v in flagged if v.reason not in sample.tolerate]
    by_reason: dict[str, int] = {}
    tolerated: dict[str, int] = {}
    for v in flagged:
        counts = by_reason if v.reason not in sample.tolerate else tolerated
        counts[v.reason] = counts.get(v.reason, 0) + 1
    complete = len(labelled) == len(sample.clips)
    rate = len(bad) / len(labelled) if labelled else 0.0
    return GateResult(
        audit_id=sample.audit_id, gate=sample.gate, total=len(sample.clips), labelled=len(labelled), bad=len(bad),
        bad_rate=rate, max_bad_rate=sample.max_bad_rate, complete=complete,
        passed=complete and rate < sample.max_bad_rate, simulated=sample.simulated, by_reason=by_reason,
        tolerated=tolerated,
        bad_clips=[{"clip_id": v.clip_id, "reason": v.reason, "note": v.note, "reviewer": v.reviewer} for v in bad],
    )
