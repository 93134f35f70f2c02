"""The pairwise view of the audit app (report section 3.4.1, human preference pairs).

``/pairs/{id}`` shows the two videos of each pending human pair side by side (looping, restarted
together), the prompt, and takes Better A / Better B / Tie plus the worse video's motion failure
(mouse or keyboard); each submitted verdict is one durable file (``infra.pair_audit_store``).
Same reviewer-token auth as the gates. Videos are served by (audit id, pair id, side) only, looked up
in the stored sample, and only when the recorded URI lies inside the run's store.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from infra.audit_store import ID_RE
from infra.config_post import MOTION_FAILURES
from infra.pair_audit_store import (
    Label,
    MotionFailure,
    PairAuditSample,
    PairVerdict,
    PairVerdictStore,
    list_pair_audits,
    load_pair_sample,
    open_run_pair_audit,
    pair_state,
)

# Keyboard: 1 / 2 / 0 pick the side; the failure's initial letter names the worse video's failure.
FAILURE_KEYS = {failure[0]: failure for failure in MOTION_FAILURES}
assert len(FAILURE_KEYS) == len(MOTION_FAILURES), "motion failures need distinct initials for their keys"


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
        state = pair_state(sample, PairVerdictStore(run_uri, sample.audit_id).latest())
        rows.append({"sample": sample, "state": state, "status": "complete" if state.complete else "pending"})
    return rows


def add_pair_routes(app: FastAPI, run_uri: str, templates: Jinja2Templates, reviewer: Callable[..., str],
                    video: Callable[[str], Response]) -> None:
    def sample_of(audit_id: str) -> PairAuditSample:
        sample = load_pair_sample(run_uri, audit_id) if ID_RE.match(audit_id) else None
        if sample is None:
            raise HTTPException(404, f"no pair audit {audit_id!r} in this run")
        return sample

    @app.get("/pairs/{audit_id}", response_class=HTMLResponse)
    def pairs_page(request: Request, audit_id: str, who: str = Depends(reviewer)):
        sample = sample_of(audit_id)
        return templates.TemplateResponse(request, "pairs.html", {"sample": sample, "who": who,
                                                                  "failures": FAILURE_KEYS})

    @app.get("/api/pairs/{audit_id}")
    def pairs_state(audit_id: str, who: str = Depends(reviewer)) -> dict:
        sample = sample_of(audit_id)
        latest = PairVerdictStore(run_uri, audit_id).latest()
        pairs = [{"pair_id": p.pair_id, "prompt": p.prompt,
                  "label": latest[p.pair_id].label if p.pair_id in latest else None,
                  "failure": latest[p.pair_id].failure if p.pair_id in latest else None} for p in sample.pairs]
        return {"audit_id": audit_id, "pairs": pairs, "state": pair_state(sample, latest).model_dump()}

    @app.post("/api/pairs/{audit_id}/verdicts")
    def add_pair_verdict(audit_id: str, body: PairVerdictIn, who: str = Depends(reviewer)) -> dict:
        sample = sample_of(audit_id)
        if body.pair_id not in {p.pair_id for p in sample.pairs}:
            raise HTTPException(404, f"pair {body.pair_id} is not pending in {audit_id}")
        try:
            verdict = PairVerdict(**body.model_dump(), reviewer=who, source="human")
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        store = PairVerdictStore(run_uri, audit_id)
        store.append(verdict)
        return pair_state(sample, store.latest()).model_dump()

    @app.get("/pair-video/{audit_id}/{pair_id}/{side}")
    def pair_video(audit_id: str, pair_id: str, side: str, who: str = Depends(reviewer)) -> Response:
        sample = sample_of(audit_id)
        found = next((p for p in sample.pairs if p.pair_id == pair_id), None)
        if found is None or side not in ("a", "b"):
            raise HTTPException(404, "no such pair video in this audit")
        return video(found.a_uri if side == "a" else found.b_uri)
