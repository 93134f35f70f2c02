"""The audit server's front door: who may send a body, how big, how deep, and what an error says.

FastAPI parses a request's JSON body before it runs the route's dependencies, so a token check in a
dependency comes after the whole body is in memory and parsed. This ASGI middleware runs first and
decides from the headers alone: a request for a protected route without a valid reviewer token is
answered 401 before one byte of its body is read; a body larger than its route allows is refused
413 (by its Content-Length, or while it streams in without one); an accepted JSON body is checked
for nesting depth before any parser sees it. Rejections close the connection (the client's unsent
body is never read) and never repeat what the client sent.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "reelflow_audit"
PUBLIC = re.compile(r"^/(healthz|login|static/.*)$")


@dataclass(frozen=True)
class BodyLimit:
    max_bytes: int
    max_depth: int = 0  # 0: the route takes no JSON


# The routes that take a body are the label routes of the review kinds (``/api/<kind path>/<id>/verdicts``):
# one verdict is a few hundred bytes (a note is at most 500 characters, 4 bytes each in UTF-8) and two
# levels deep. Every other route takes no body at all.
LABEL = BodyLimit(8 * 1024, 2)
NO_BODY = BodyLimit(0)
LABEL_PATHS = ("audit", "pairs")


def limit_for(path: str, label_paths: tuple[str, ...] = LABEL_PATHS) -> BodyLimit:
    labels = re.compile(rf"^/api/({'|'.join(map(re.escape, label_paths))})/[^/]+/verdicts$")
    return LABEL if labels.match(path) else NO_BODY


def reviewer_of(headers: dict[str, str], tokens: dict[str, str]) -> str | None:
    """The reviewer whose token the request carries (Bearer header, else the login cookie)."""
    given = ""
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            given = value
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    found = None
    for token, name in tokens.items():  # compare with every token: timing says nothing about which
        if hmac.compare_digest(given.encode(), token.encode()):
            found = name
    return found


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays/objects, counted without parsing (brackets inside strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


async def _reply(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: authentication, per-route body size and JSON depth, before the app."""

    def __init__(self, app, tokens: dict[str, str], label_paths: tuple[str, ...] = LABEL_PATHS):
        self.app, self.tokens, self.label_paths = app, tokens, label_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not PUBLIC.match(path) and reviewer_of(headers, self.tokens) is None:
            return await _reply(send, 401, "reviewer token required: open the link printed by `reelflow audit serve`")
        limit = limit_for(path, self.label_paths)
        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            return await _reply(send, 400, "Content-Length is not a number")
        if declared > limit.max_bytes:
            return await _reply(send, 413, f"request body too large for this route (at most {limit.max_bytes} bytes)")
        if limit.max_bytes == 0 and "transfer-encoding" not in headers:
            return await self.app(scope, receive, send)
        try:
            body = await self._read(receive, limit.max_bytes)
        except TooLarge:
            return await _reply(send, 413, f"request body too large for this route (at most {limit.max_bytes} bytes)")
        if body and limit.max_depth and json_depth(body) > limit.max_depth:
            return await _reply(send, 422, f"JSON nested deeper than {limit.max_depth} levels")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    @staticmethod
    async def _read(receive: Callable, max_bytes: int) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise TooLarge  # the client went away mid-body: nothing to answer
            size += len(message.get("body", b""))
            if size > max_bytes:
                raise TooLarge
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)
