"""What the audits store: a gate's sample, one reviewer's verdict, and the gate's state (report 3.1);
the pending human pairs and their preference labels (report 3.4.1).

Kept apart from the store's I/O (``infra.audit_store``) so the records and the counting rule can be
read without it. Notes and reviewer names are cleaned of control characters on the way in: they are
shown in logs, terminals and pages.
"""

from __future__ import annotations

import re
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.config_datasets import REASONS
from infra.config_post import MOTION_FAILURES

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A clip is bad at a gate when ANY reviewer's latest verdict is bad for a reason the gate does not
# tolerate: the report's bad-case rate is a ceiling on defects that slip through, so one reviewer
# seeing a defect is enough (the conservative reading of two opinions).
RULE = "any"
RULE_TEXT = "a clip counts as bad when any reviewer's latest verdict on it is bad (for a reason not tolerated)"
# Terminal control characters (C0 but tab/newline, DEL, C1) and bidirectional overrides: a note is
# shown in logs, terminals and pages, where these would rewrite what the reader sees.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
STALE_PART_S = 60.0


def clean_text(text: str) -> str:
    """``text`` without control characters; tabs and line breaks become spaces (one-line notes)."""
    return _CONTROL.sub("", text.replace("\t", " ").replace("\r", " ").replace("\n", " "))
Reason = Literal["black", "static", "text", "mosaic", "effects/stickers", "low quality", "wrong caption", "other"]
assert set(Reason.__args__) == set(REASONS)


class ReviewerNote(BaseModel):
    """What every human label carries (gate verdicts and preference pairs): who, when, a one-line note."""
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=500)
    reviewer: str = "unknown"
    at: float = Field(default_factory=time.time)

    @field_validator("note", "reviewer")
    @classmethod
    def _clean(cls, text: str) -> str:
        return clean_text(text)


class Verdict(ReviewerNote):
    clip_id: str = Field(pattern=ID_RE.pattern)
    verdict: Literal["good", "bad"]
    reason: Reason | None = None
    source: Literal["human", "file", "simulated"] = "human"

    @model_validator(mode="after")
    def _reason(self) -> Verdict:
        if self.verdict == "bad" and self.reason is None:
            raise ValueError(f"a bad verdict needs a reason, one of: {', '.join(REASONS)}")
        if self.verdict == "good":
            self.reason = None
        return self


class SampledClip(BaseModel):
    clip_id: str
    clip_uri: str | None = None  # relative to the run root (older samples: absolute)
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
    changes: list[str] = Field(default_factory=list)  # settings changed after the draw, when and how
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
    tolerate: list[str] = Field(default_factory=list)
    rule: str = RULE
    tolerated_clips: list[dict] = Field(default_factory=list)
    disagreements: list[dict] = Field(default_factory=list)  # clips whose reviewers' verdicts differ

    def summary(self) -> str:
        label = " [SIMULATED from corpus truth]" if self.simulated else ""
        verdict = "PASSED" if self.passed else ("FAILED" if self.complete else "PENDING")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.by_reason.items(), key=lambda kv: -kv[1])) or "none"
        return (f"audit gate {self.gate} {verdict}{label}: {self.bad}/{self.labelled} bad "
                f"({100 * self.bad_rate:.1f}%, must be below {100 * self.max_bad_rate:g}%), "
                f"{self.labelled}/{self.total} labelled; bad cases by reason: {reasons}"
                + (f"; tolerated at this gate: {self.tolerated}" if self.tolerated else "")
                + (f"; reviewers disagree on {len(self.disagreements)} clips (counted bad if any reviewer says bad)"
                   if self.disagreements else ""))


# --- pairwise preference labels (report section 3.4.1) --------------------------------------------------

# What a reviewer is shown, by the ``kind`` of the pairs table (tasks/post/pairs.py).
PAIR_KINDS = {"human": "two text-to-video samples of the same prompt from the same checkpoint, different seeds "
                       "(neither is real footage; the side of each is random)"}
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
