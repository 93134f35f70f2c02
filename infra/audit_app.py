"""``reelflow audit serve``: the reviewers' web page for a run's audit gates (report section 3.1).

One app for every kind of human review (``infra.audit_pages``): ``/`` lists the run's reviews with
progress; ``/audit/{id}`` plays each clip sampled by a dataset gate or manual review and takes Good /
Bad + reason, ``/pairs/{id}`` shows the pending human preference pairs and takes Better A / B / Tie;
by mouse or keyboard. Every kind has the same three routes (page, ``/api/`` state, ``POST`` a label),
and every label is stored at once (``infra.review_store``), so closing the tab or killing the server
loses nothing.

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
from pydantic import BaseModel

from infra import storage
from infra.audit_guard import COOKIE, Guard, reviewer_of
from infra.audit_models import ID_RE, RULE_TEXT
from infra.audit_pages import GATE_PAGE, PAGES, PAIRS_PAGE, ReviewPage, VerdictIn  # noqa: F401 (VerdictIn re-exported)
from infra.audit_store import clip_location
from infra.review_store import VerdictStore, load_review, remove_stale_parts

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
    app.add_middleware(Guard, tokens=tokens, label_paths=tuple(page.path for page in PAGES))
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

    def sample_of(page: ReviewPage, audit_id: str):
        sample = load_review(run_uri, page.kind, audit_id) if ID_RE.match(audit_id) else None
        if sample is None:
            raise HTTPException(404, page.missing)
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
        return templates.TemplateResponse(request, "index.html", {
            "rows": GATE_PAGE.rows(run_uri), "pair_rows": PAIRS_PAGE.rows(run_uri), "who": who, "run_uri": run_uri,
            "rule": RULE_TEXT})

    for page in PAGES:
        _add_review_routes(app, page, run_uri, templates, reviewer, sample_of)

    @app.get("/clip/{audit_id}/{clip_id}")
    def clip(audit_id: str, clip_id: str, who: str = Depends(reviewer)) -> Response:
        sample = sample_of(GATE_PAGE, audit_id)
        found = next((c for c in sample.clips if c.clip_id == clip_id), None)
        if found is None or not found.clip_uri:
            raise HTTPException(404, "no such clip in this audit")
        return video(found.clip_uri)

    @app.get("/pair-video/{audit_id}/{pair_id}/{side}")
    def pair_video(audit_id: str, pair_id: str, side: str, who: str = Depends(reviewer)) -> Response:
        sample = sample_of(PAIRS_PAGE, audit_id)
        found = next((p for p in sample.pairs if p.pair_id == pair_id), None)
        if found is None or side not in ("a", "b"):
            raise HTTPException(404, "no such pair video in this audit")
        return video(found.a_uri if side == "a" else found.b_uri)

    def video(stored: str) -> Response:
        uri = clip_location(run_uri, stored)
        if not _inside(uri, run_uri):
            raise HTTPException(403, "video file lies outside the run's store")
        if not storage.is_remote(uri):
            return FileResponse(uri, media_type="video/mp4")  # Range requests: seeking works
        return StreamingResponse(_chunks(uri), media_type="video/mp4")

    return app


def _add_review_routes(app: FastAPI, page: ReviewPage, run_uri: str, templates: Jinja2Templates, reviewer,
                       sample_of) -> None:
    """A kind's page, its state and its label route: the same three routes for every kind of review."""

    def show(request: Request, audit_id: str, who: str = Depends(reviewer)):
        return templates.TemplateResponse(request, page.template, page.page(run_uri, sample_of(page, audit_id), who))

    def state(audit_id: str, who: str = Depends(reviewer)) -> dict:
        return page.state(run_uri, sample_of(page, audit_id), who)

    def add_label(audit_id: str, body: BaseModel, who: str = Depends(reviewer)) -> dict:
        sample = sample_of(page, audit_id)
        if page.read_only(sample):
            raise HTTPException(409, page.read_only_text)
        if getattr(body, page.kind.key) not in page.kind.item_ids(sample):
            raise HTTPException(404, page.no_item)
        try:
            verdict = page.label(body, who)
        except ValueError:
            raise HTTPException(422, page.refused) from None
        store = VerdictStore(run_uri, audit_id, page.kind)
        store.append(verdict)
        return page.counted(sample, store)

    add_label.__annotations__["body"] = page.label_in  # FastAPI reads the body's model from the annotation
    app.add_api_route(f"/{page.path}/{{audit_id}}", show, methods=["GET"], response_class=HTMLResponse)
    app.add_api_route(f"/api/{page.path}/{{audit_id}}", state, methods=["GET"])
    app.add_api_route(f"/api/{page.path}/{{audit_id}}/verdicts", add_label, methods=["POST"])


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
