"""One durable store for every kind of human review: the bad-case gates and the manual review of the
curated datasets (report section 3.1) and the pairwise preference labels (report section 3.4.1).

A kind of review is data (:class:`ReviewKind`): the folder its reviews live in under the run, the record
of what is reviewed (the sample, written once) and the record of one label (the verdict). Everything
else is the same for all kinds, and written once here:

``{run_uri}/{kind.root}/{review_id}/sample.json`` (written once, when the review opens) and
``verdicts/{ns}-{item_id}-{rand}.json``, one file per verdict. One object per verdict rather than an
appended JSONL because object stores (s3://) cannot append; locally each file is written to a temporary
name, fsync'd and renamed, so a killed server or flow loses at most the click in flight, and a
half-written verdict never exists under its real name. Every label stays (the history); each reviewer's
latest one on an item counts. A new kind of review is one more :class:`ReviewKind` in :data:`KINDS`,
a page for it in ``infra.audit_pages`` and its own counting rule.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass

from pydantic import BaseModel

from infra import storage
from infra.audit_models import ID_RE, STALE_PART_S, AuditSample, PairAuditSample, PairVerdict, Verdict

SAMPLE = "sample.json"
RESULT = "result.json"


@dataclass(frozen=True)
class ReviewKind:
    name: str  # what the reviews are ("gate": a dataset gate or manual review; "pairs": preference pairs)
    root: str  # their folder under the run
    sample: type[BaseModel]  # what one review shows (sample.json)
    verdict: type[BaseModel]  # one label on one item (verdicts/*.json)
    key: str  # the field naming the labelled item, in a verdict and in an item of the sample
    items: str  # the sample's list of items

    def item_ids(self, sample: BaseModel) -> set[str]:
        return {getattr(item, self.key) for item in getattr(sample, self.items)}


GATES = ReviewKind("gate", "audits", AuditSample, Verdict, key="clip_id", items="clips")
PAIRS = ReviewKind("pairs", "pair_audits", PairAuditSample, PairVerdict, key="pair_id", items="pairs")
KINDS = (GATES, PAIRS)


def review_uri(run_uri: str, review_id: str, root: str = GATES.root) -> str:
    if not ID_RE.match(review_id):
        raise ValueError(f"not an audit id: {review_id!r}")
    return storage.join(run_uri, root, review_id)


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
    """Delete the ``.part`` temporaries a killed writer left under the run's reviews of every kind (never
    read: their names start with a dot); a write in flight takes milliseconds, so anything older is dead."""
    if storage.is_remote(run_uri):
        return []  # object stores have no temporaries (a PUT is atomic)
    removed, now = [], time.time()
    for kind in KINDS:
        for parent, _, files in os.walk(os.path.join(run_uri, kind.root)):
            for name in files:
                path = os.path.join(parent, name)
                if name.startswith(".") and name.endswith(".part") and now - os.path.getmtime(path) > older_than_s:
                    os.unlink(path)
                    removed.append(path)
    return removed


def save_review(run_uri: str, kind: ReviewKind, sample: BaseModel) -> None:
    write_durably(storage.join(review_uri(run_uri, sample.audit_id, kind.root), SAMPLE), sample.model_dump_json(indent=1))


def load_review(run_uri: str, kind: ReviewKind, review_id: str):
    """The sample of one review of ``kind`` (None: no such review; a malformed id: ValueError)."""
    uri = storage.join(review_uri(run_uri, review_id, kind.root), SAMPLE)
    return kind.sample.model_validate_json(storage.read_text(uri)) if storage.exists(uri) else None


def list_reviews(run_uri: str, kind: ReviewKind) -> list:
    """Every review of ``kind`` in the run, oldest first."""
    root = storage.join(run_uri, kind.root)
    if not storage.exists(root):
        return []
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in storage.filesystem(root).ls(storage._path(root), detail=False))
    found = [load_review(run_uri, kind, n) for n in names if ID_RE.match(n)]
    return sorted((s for s in found if s is not None), key=lambda s: s.created_at)


class VerdictStore:
    """Append-only verdicts of one review (one durable file each); ``kind`` says what a verdict is and
    which field names its item."""

    kind: ReviewKind = GATES

    def __init__(self, run_uri: str, audit_id: str, kind: ReviewKind | None = None):
        self.kind = kind or self.kind
        self.uri = storage.join(review_uri(run_uri, audit_id, self.kind.root), "verdicts")

    def append(self, verdict: BaseModel) -> None:
        name = f"{time.time_ns():020d}-{getattr(verdict, self.kind.key)}-{uuid.uuid4().hex[:6]}.json"
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
            out.append(self.kind.verdict.model_validate_json(storage.read_text(uri)))
        return out

    def latest(self) -> dict:
        """The last verdict given on each item, by anyone (file names sort by time)."""
        return {getattr(v, self.kind.key): v for v in self.history()}

    def reviews(self) -> dict[str, list]:
        """Each reviewer's latest verdict on each item, in the order they were first given."""
        out: dict[str, dict[str, BaseModel]] = {}
        for v in self.history():
            out.setdefault(getattr(v, self.kind.key), {})[v.reviewer] = v
        return {k: list(by.values()) for k, by in out.items()}
