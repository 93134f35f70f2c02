"""``reelflow audit serve``: the reviewers' web page for a run's audit gates (report section 3.1).

Pages: ``/`` lists the run's audits with progress; ``/audit/{id}`` plays each sampled clip and
takes Good / Bad + reason by mouse or keyboard; every click is POSTed and stored at once
(``infra.audit_store``), so closing the tab or killing the server loses nothing. The pairwise view
of the ``pairs`` stage's pending human pairs (``/pairs/{id}``) lives in ``infra.pair_audit_app``.

Security: every route but ``/healthz`` and ``/login`` needs a reviewer token (``?token=`` once at
``/login`` sets an HttpOnly SameSite=Strict cookie; API clients may send ``Authorization: Bearer``),
checked from the headers before any body is read; bodies are bounded per route in size and JSON
depth, and no error repeats what the client sent (``infra.audit_guard``). Clips are served only by
(audit id, clip id), both matched against the stored sample, and only when the clip's path (relative
to the run root, so a copied or moved run still serves) lies inside the run's folder: no path from a
request ever reaches the file system, so there is nothing to traverse. A simulated audit is read-only.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from infra import storage
from infra.audit_guard import COOKIE, Guard, reviewer_of
from infra.audit_store import (
    ID_RE,
    RULE_TEXT,
    Reason,
    Verdict,
    VerdictStore,
    clip_location,
    evaluate,
    load_result,
    load_sample,
    remove_stale_parts,
)
from infra.audit_view import audit_rows, clip_states
from infra.config_datasets import REASONS
from infra.pair_audit_app import add_pair_routes, pair_rows

WEB = Path(__file__).resolve().parent / "audit_web"


def parse_tokens(spec: str | None) -> dict[str, str]:
    """``"alice:tok1,bob:tok2"`` (``REELFLOW_AUDIT_TOKENS``) -> {token: reviewer}."""
    tokens = {}
    for item in (spec or "").split(","):
        if item.strip():
            name, _, token = item.strip().partition(":")
            if not token or len(token) < 8:
                raise ValueError(f"reviewer token for {name!r} must be name:token with a token of 8+ characters")
            tokens[token] = name
    return tokens


def new_token() -> str:
    return secrets.token_urlsafe(18)


class VerdictIn(BaseModel):
    clip_id: str = Field(pattern=ID_RE.pattern)
    verdict: str = Field(pattern="^(good|bad)$")
    reason: Reason | None = None
    note: str = Field("", max_length=500)


def _inside(uri: str, root: str) -> bool:
    if storage.is_remote(uri) or storage.is_remote(root):
        return uri.startswith(root.rstrip("/") + "/")
    path, base = os.path.realpath(uri), os.path.realpath(root)
    return os.path.commonpath([path, base]) == base and path != base


def create_app(run_uri: str, tokens: dict[str, str]) -> FastAPI:
    if not tokens:
        raise ValueError("the audit app needs at least one reviewer token")
    run_uri = storage.normalize(run_uri)
    remove_stale_parts(run_uri)  # what a killed server or flow left half-written
    app = FastAPI(title="reelflow audit", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, tokens=tokens)
    templates = Jinja2Templates(directory=str(WEB))
    app.mount("/static", StaticFiles(directory=str(WEB / "static")), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default reply repeats each offending input: name the field and the rule only.
        return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid")}
                                        for e in exc.errors()]}, status_code=422)

    def reviewer(request: Request) -> str:
        name = reviewer_of({k.lower(): v for k, v in request.headers.items()}, tokens)
        if name is None:
            raise HTTPException(401, "reviewer token required: open the link printed by `reelflow audit serve`")
        return name

    def sample_of(audit_id: str):
        sample = load_sample(run_uri, audit_id) if ID_RE.match(audit_id) else None
        if sample is None:
            raise HTTPException(404, "no such audit in this run")
        return sample

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/login")
    def login(token: str = "") -> Response:
        if not any(hmac.compare_digest(token.encode(), t.encode()) for t in tokens):
            raise HTTPException(401, "unknown reviewer token")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, who: str = Depends(reviewer)):
        return templates.TemplateResponse(request, "index.html", {"rows": audit_rows(run_uri), "pair_rows": pair_rows(run_uri),
                                                                  "who": who, "run_uri": run_uri, "rule": RULE_TEXT})

    @app.get("/audit/{audit_id}", response_class=HTMLResponse)
    def audit_page(request: Request, audit_id: str, who: str = Depends(reviewer)):
        sample = sample_of(audit_id)
        state = evaluate(sample, VerdictStore(run_uri, audit_id).reviews())
        return templates.TemplateResponse(request, "audit.html", {
            "sample": sample, "who": who, "reasons": REASONS, "state": state, "rule": RULE_TEXT,
            "result": load_result(run_uri, audit_id), "run_id": run_uri.rstrip("/").rsplit("/", 1)[-1]})

    @app.get("/api/audit/{audit_id}")
    def audit_state(audit_id: str, who: str = Depends(reviewer)) -> dict:
        sample = sample_of(audit_id)
        reviews = VerdictStore(run_uri, audit_id).reviews()
        return {"audit_id": audit_id, "simulated": sample.simulated, "read_only": sample.simulated,
                "tolerate": sample.tolerate, "clips": clip_states(sample, reviews, who),
                "state": evaluate(sample, reviews).model_dump()}

    @app.post("/api/audit/{audit_id}/verdicts")
    def add_verdict(audit_id: str, body: VerdictIn, who: str = Depends(reviewer)) -> dict:
        sample = sample_of(audit_id)
        if sample.simulated:
            raise HTTPException(409, "this audit is simulated from the corpus truth; it takes no human verdicts")
        if body.clip_id not in {c.clip_id for c in sample.clips}:
            raise HTTPException(404, "no such clip in the sample of this audit")
        try:
            verdict = Verdict(**body.model_dump(), reviewer=who, source="human")
        except ValueError:
            raise HTTPException(422, "a bad verdict needs a reason from the taxonomy") from None
        store = VerdictStore(run_uri, audit_id)
        store.append(verdict)
        return evaluate(sample, store.reviews()).model_dump()

    @app.get("/clip/{audit_id}/{clip_id}")
    def clip(audit_id: str, clip_id: str, who: str = Depends(reviewer)) -> Response:
        sample = sample_of(audit_id)
        found = next((c for c in sample.clips if c.clip_id == clip_id), None)
        if found is None or not found.clip_uri:
            raise HTTPException(404, "no such clip in this audit")
        return video(found.clip_uri)

    def video(stored: str) -> Response:
        uri = clip_location(run_uri, stored)
        if not _inside(uri, run_uri):
            raise HTTPException(403, "video file lies outside the run's store")
        if not storage.is_remote(uri):
            return FileResponse(uri, media_type="video/mp4")  # Range requests: seeking works
        return StreamingResponse(_chunks(uri), media_type="video/mp4")

    add_pair_routes(app, run_uri, templates, reviewer, video)
    return app


def _chunks(uri: str, size: int = 1 << 20):
    with storage.open_uri(uri, "rb") as fh:
        while block := fh.read(size):
            yield block


def serve(run_uri: str, tokens: dict[str, str], host: str = "127.0.0.1", port: int = 8765) -> None:
    import uvicorn

    uvicorn.run(create_app(run_uri, tokens), host=host, port=port, log_level="warning")


def serve_run(run_root: str, run_id: str, host: str = "127.0.0.1", port: int = 8765, echo=print) -> None:
    """``reelflow audit serve RUN_ID``: tokens from ``REELFLOW_AUDIT_TOKENS`` (name:token,...), else one
    fresh token whose login link is printed."""
    run_uri = storage.join(storage.normalize(run_root), run_id)
    if not storage.exists(run_uri):
        raise FileNotFoundError(f"no run {run_id!r} under {run_root}")
    tokens = parse_tokens(os.environ.get("REELFLOW_AUDIT_TOKENS"))
    if tokens:
        echo(f"audit of run {run_id}: reviewers open http://{host}:{port}/login?token=<their token>")
    else:
        token = new_token()
        tokens = {token: "reviewer"}
        echo(f"audit of run {run_id}: open http://{host}:{port}/login?token={token}")
    serve(run_uri, tokens, host, port)
