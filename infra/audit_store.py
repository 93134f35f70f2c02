"""Durable audit state in the run's store: the sample of each gate and every verdict given.

Layout: ``{run_uri}/audits/{audit_id}/sample.json`` (written once, when the gate opens) and
``verdicts/{ns}-{clip_id}-{rand}.json``, one file per verdict. One object per verdict rather than an
appended JSONL because object stores (s3://) cannot append; locally each file is written to a
temporary name, fsync'd and renamed, so a killed server or flow loses at most the click in flight,
and a half-written verdict never exists under its real name. Each reviewer's latest verdict on a
clip counts (a reviewer may change their mind; the full history stays); when reviewers disagree,
every verdict is kept and shown, and the gate counts the clip by ``RULE``. Sample paths are stored
relative to the run root, so a copied or moved run still finds its clips. Imported by the web app
(infra) and the gate (tasks), so it lives in infra.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid

from pydantic import BaseModel

from infra import manifest as mf
from infra import storage
from infra.audit_models import (  # noqa: F401  (the store's records, re-exported for its callers)
    ID_RE,
    RULE,
    RULE_TEXT,
    STALE_PART_S,
    AuditSample,
    GateResult,
    Reason,
    SampledClip,
    Verdict,
    clean_text,
)

AUDITS = "audits"
SAMPLE = "sample.json"
RESULT = "result.json"

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
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600; published records are readable
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


def remove_stale_parts(run_uri: str, older_than_s: float = STALE_PART_S) -> list[str]:
    """Delete the ``.part`` temporaries a killed writer left under the run's audits (never read: their
    names start with a dot); a write in flight takes milliseconds, so anything older is dead."""
    if storage.is_remote(run_uri):
        return []  # object stores have no temporaries (a PUT is atomic)
    removed, now = [], time.time()
    for root in (AUDITS, "pair_audits"):
        for parent, _, files in os.walk(os.path.join(run_uri, root)):
            for name in files:
                path = os.path.join(parent, name)
                if name.startswith(".") and name.endswith(".part") and now - os.path.getmtime(path) > older_than_s:
                    os.unlink(path)
                    removed.append(path)
    return removed


def clip_location(run_uri: str, clip_uri: str | None) -> str | None:
    """Where a sampled clip is now: relative paths join the run root; an absolute path recorded by an
    older run that was copied or moved since is found by its part below the run's folder name."""
    if not clip_uri:
        return None
    if mf.is_relative(clip_uri):
        return mf.resolve(clip_uri, run_uri)
    marker = "/" + run_uri.rstrip("/").rsplit("/", 1)[-1] + "/"
    if not clip_uri.startswith(run_uri.rstrip("/") + "/") and marker in clip_uri:
        return storage.join(run_uri, clip_uri.rsplit(marker, 1)[-1])
    return clip_uri


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
        """The last verdict given on each item, by anyone (file names sort by time)."""
        return {getattr(v, self.key): v for v in self.history()}

    def reviews(self) -> dict[str, list]:
        """Each reviewer's latest verdict on each item, in the order they were first given."""
        out: dict[str, dict[str, BaseModel]] = {}
        for v in self.history():
            out.setdefault(getattr(v, self.key), {})[v.reviewer] = v
        return {k: list(by.values()) for k, by in out.items()}


def decide(verdicts: list[Verdict], tolerate: list[str]) -> tuple[str, Verdict]:
    """One clip under ``RULE``: ("bad" | "tolerated" | "good", the verdict that decided it)."""
    bad = [v for v in verdicts if v.verdict == "bad" and v.reason not in tolerate]
    if bad:
        return "bad", bad[0]
    tolerated = [v for v in verdicts if v.verdict == "bad"]
    return ("tolerated", tolerated[0]) if tolerated else ("good", verdicts[-1])


def _as_lists(latest: dict) -> dict[str, list[Verdict]]:
    return {k: (v if isinstance(v, list) else [v]) for k, v in latest.items() if v}


def evaluate(sample: AuditSample, latest: dict) -> GateResult:
    """The gate's state: passes when every sampled clip is labelled and bad/total < max_bad_rate.
    ``latest``: clip -> verdict, or clip -> every reviewer's latest verdict (``VerdictStore.reviews``);
    a clip is bad by ``RULE``; bad verdicts whose reason the gate tolerates are counted apart."""
    reviews = _as_lists(latest)
    by_reason: dict[str, int] = {}
    tolerated: dict[str, int] = {}
    bad, tolerated_clips, disagreements, labelled = [], [], [], 0
    for clip in sample.clips:
        if clip.clip_id not in reviews:
            continue
        labelled += 1
        given = reviews[clip.clip_id]
        state, decider = decide(given, sample.tolerate)
        if state != "good":
            counts = by_reason if state == "bad" else tolerated
            counts[decider.reason] = counts.get(decider.reason, 0) + 1
            (bad if state == "bad" else tolerated_clips).append(decider)
        if len({(v.verdict, v.reason) for v in given}) > 1:
            disagreements.append({"clip_id": clip.clip_id, "counted": state, "verdicts": [
                {"reviewer": v.reviewer, "verdict": v.verdict, "reason": v.reason} for v in given]})
    complete = labelled == len(sample.clips)
    rate = len(bad) / labelled if labelled else 0.0

    def listed(vs: list[Verdict]) -> list[dict]:
        return [{"clip_id": v.clip_id, "reason": v.reason, "note": v.note, "reviewer": v.reviewer} for v in vs]

    return GateResult(
        audit_id=sample.audit_id, gate=sample.gate, total=len(sample.clips), labelled=labelled, bad=len(bad),
        bad_rate=rate, max_bad_rate=sample.max_bad_rate, complete=complete,
        passed=complete and rate < sample.max_bad_rate, simulated=sample.simulated, by_reason=by_reason,
        tolerated=tolerated, bad_clips=listed(bad), tolerate=list(sample.tolerate), tolerated_clips=listed(tolerated_clips),
        disagreements=disagreements,
    )
