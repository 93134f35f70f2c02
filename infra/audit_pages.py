"""The review kinds as the audit app shows them: one :class:`ReviewPage` per kind of review.

The app (``infra.audit_app``) serves every page alike: ``/{path}/{id}`` (the page), ``/api/{path}/{id}``
(its state) and ``POST /api/{path}/{id}/verdicts`` (one label, stored at once); what differs between kinds
is data and a few small functions here. Gates and manual reviews (report section 3.1) are ``/audit/``
pages: Good / Bad + reason per sampled clip. Pending human preference pairs (report section 3.4.1) are
``/pairs/`` pages: the two videos side by side, Better A / Better B / Tie plus the worse video's motion
failure. A new kind of review: a :class:`~infra.review_store.ReviewKind`, a template and one entry in
:data:`PAGES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field

from infra.audit_models import (
    ID_RE,
    PAIR_KINDS,
    RULE_TEXT,
    Label,
    MotionFailure,
    PairVerdict,
    Reason,
    Verdict,
)
from infra.audit_store import evaluate, load_result
from infra.audit_view import audit_rows, clip_states
from infra.config_datasets import REASONS
from infra.config_post import MOTION_FAILURES
from infra.pair_audit_store import list_pair_audits, open_run_pair_audit, pair_state
from infra.review_store import GATES, PAIRS, ReviewKind, VerdictStore

# Keyboard: 1 / 2 / 0 pick the side; the failure's initial letter names the worse video's failure.
FAILURE_KEYS = {failure[0]: failure for failure in MOTION_FAILURES}
assert len(FAILURE_KEYS) == len(MOTION_FAILURES), "motion failures need distinct initials for their keys"


@dataclass(frozen=True)
class ReviewPage:
    kind: ReviewKind
    path: str  # /{path}/{id}, /api/{path}/{id}, /api/{path}/{id}/verdicts
    template: str
    label_in: type[BaseModel]  # what a reviewer posts
    label: Callable[[BaseModel, str], BaseModel]  # (posted, reviewer) -> the stored verdict; ValueError: refused
    page: Callable[[str, BaseModel, str], dict]  # (run_uri, sample, reviewer) -> the template's values
    state: Callable[[str, BaseModel, str], dict]  # (run_uri, sample, reviewer) -> the API's state
    counted: Callable[[BaseModel, VerdictStore], dict]  # the review's state after a label
    rows: Callable[[str], list[dict]]  # the index's rows of this kind
    missing: str  # 404: no such review
    no_item: str  # 404: the item is not in the review
    refused: str  # 422: the label breaks the kind's rule
    read_only: Callable[[BaseModel], bool] = lambda sample: False
    read_only_text: str = ""


# --- the dataset gates and the manual review ------------------------------------------------------------

class VerdictIn(BaseModel):
    clip_id: str = Field(pattern=ID_RE.pattern)
    verdict: str = Field(pattern="^(good|bad)$")
    reason: Reason | None = None
    note: str = Field("", max_length=500)


def _gate_page(run_uri: str, sample, who: str) -> dict:
    return {"sample": sample, "who": who, "reasons": REASONS, "rule": RULE_TEXT,
            "state": evaluate(sample, VerdictStore(run_uri, sample.audit_id, GATES).reviews()),
            "result": load_result(run_uri, sample.audit_id), "run_id": run_uri.rstrip("/").rsplit("/", 1)[-1]}


def _gate_state(run_uri: str, sample, who: str) -> dict:
    reviews = VerdictStore(run_uri, sample.audit_id, GATES).reviews()
    return {"audit_id": sample.audit_id, "simulated": sample.simulated, "read_only": sample.simulated,
            "tolerate": sample.tolerate, "clips": clip_states(sample, reviews, who),
            "state": evaluate(sample, reviews).model_dump()}


GATE_PAGE = ReviewPage(
    kind=GATES, path="audit", template="audit.html", label_in=VerdictIn,
    label=lambda body, who: Verdict(**body.model_dump(), reviewer=who, source="human"),
    page=_gate_page, state=_gate_state, counted=lambda sample, store: evaluate(sample, store.reviews()).model_dump(),
    rows=audit_rows, missing="no such audit in this run", no_item="no such clip in the sample of this audit",
    refused="a bad verdict needs a reason from the taxonomy", read_only=lambda sample: sample.simulated,
    read_only_text="this audit is simulated from the corpus truth; it takes no human verdicts")


# --- the pairwise preference labels ---------------------------------------------------------------------

class PairVerdictIn(BaseModel):
    pair_id: str = Field(pattern=ID_RE.pattern)
    label: Label
    failure: MotionFailure | None = None
    note: str = Field("", max_length=500)


def pair_rows(run_uri: str) -> list[dict]:
    """The index's pair audits: opening the run's published ``pairs`` stage makes its audit appear."""
    open_run_pair_audit(run_uri)
    rows = []
    for sample in list_pair_audits(run_uri):
        state = pair_state(sample, VerdictStore(run_uri, sample.audit_id, PAIRS).latest())
        rows.append({"sample": sample, "state": state, "status": "complete" if state.complete else "pending"})
    return rows


def _pairs_page(run_uri: str, sample, who: str) -> dict:
    kinds = {p.kind: PAIR_KINDS.get(p.kind, p.kind) for p in sample.pairs}
    return {"sample": sample, "who": who, "failures": FAILURE_KEYS, "kinds": kinds}


def _pairs_state(run_uri: str, sample, who: str) -> dict:
    latest = VerdictStore(run_uri, sample.audit_id, PAIRS).latest()
    pairs = [{"pair_id": p.pair_id, "prompt": p.prompt, "kind": p.kind,
              "kind_text": f"{p.kind} pair: {PAIR_KINDS.get(p.kind, p.kind)}"
              + (f"; generated by {p.generator}" if p.generator else ""),
              "label": latest[p.pair_id].label if p.pair_id in latest else None,
              "failure": latest[p.pair_id].failure if p.pair_id in latest else None} for p in sample.pairs]
    return {"audit_id": sample.audit_id, "pairs": pairs, "state": pair_state(sample, latest).model_dump()}


PAIRS_PAGE = ReviewPage(
    kind=PAIRS, path="pairs", template="pairs.html", label_in=PairVerdictIn,
    label=lambda body, who: PairVerdict(**body.model_dump(), reviewer=who, source="human"),
    page=_pairs_page, state=_pairs_state, counted=lambda sample, store: pair_state(sample, store.latest()).model_dump(),
    rows=pair_rows, missing="no such pair audit in this run", no_item="no such pending pair in this audit",
    refused="better A or B needs the worse video's motion failure")

PAGES = (GATE_PAGE, PAIRS_PAGE)
