"""Hostile requests against the audit server: no token, oversized, deeply nested JSON, traversal,
control characters. Each is answered 4xx before its body is read, and no reply repeats what was sent.
The memory check runs the real server process (uvicorn) and sends it 100 oversized unauthenticated
requests: its peak resident memory may grow less than 50 MB over idle (benchmarks/audit_memory.py
prints the same measurement)."""

import json
import os
import socket

import pytest
from audit_helpers import audit_cfg, audit_run, start_audit_server
from fastapi.testclient import TestClient

from benchmarks.audit_memory import hostile_flood, rss_kib
from infra.audit_app import create_app
from infra.audit_guard import json_depth
from infra.audit_store import VerdictStore
from tasks.curate.lib.audit import open_audit

TOKENS = {"tok-alice-123": "alice"}
BEARER = {"Authorization": "Bearer tok-alice-123"}
MARK = "ECHO-ME-7f3a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def audited(make_cfg, tmp_path):
    ctx, ds = audit_run(make_cfg(), tmp_path)
    return ctx, open_audit(ctx, audit_cfg(), "D_540p", ds)


def test_json_depth_counts_nesting_outside_strings():
    assert json_depth(b'{"a": [1, {"b": 2}]}') == 3
    assert json_depth(b'{"note": "[[[[{{{{ \\" ]]"}') == 1
    assert json_depth(b"[" * 5000 + b"]" * 5000) == 5000


def test_hostile_requests_get_4xx_without_echo(audited):
    ctx, sample = audited
    client = TestClient(create_app(ctx.run_uri, TOKENS))
    url, clip = f"/api/audit/{sample.audit_id}/verdicts", sample.clips[0].clip_id
    body = json.dumps({"clip_id": clip, "verdict": "good", "note": MARK})
    cases = {  # name -> (response, expected status)
        "no token": (client.post(url, content=body, headers={"content-type": "application/json"}), 401),
        "wrong token": (client.post(url, content=body, headers={"Authorization": "Bearer nope-nope-nope"}), 401),
        "oversized": (client.post(url, content=MARK * 100_000, headers=BEARER), 413),
        "body on a GET route": (client.request("GET", "/", content=MARK * 10, headers=BEARER), 413),
        "deep JSON": (client.post(url, content="[" * 3_000 + json.dumps(MARK) + "]" * 3_000, headers=BEARER), 422),
        "deep JSON, no token": (client.post(url, content="[" * 10_000 + "]" * 10_000), 401),
        "invalid field": (client.post(url, json={"clip_id": clip, "verdict": MARK}, headers=BEARER), 422),
        "long note": (client.post(url, json={"clip_id": clip, "verdict": "good", "note": MARK * 100}, headers=BEARER), 422),
        "not JSON": (client.post(url, content=MARK, headers={**BEARER, "content-type": "application/json"}), 422),
        "unknown clip": (client.post(url, json={"clip_id": "0" * 16 + MARK.lower()[:4], "verdict": "good"},
                                     headers=BEARER), 404),
        "traversal": (client.get(f"/clip/{sample.audit_id}/..%2F..%2F{MARK}", headers=BEARER), 404),
        "traversal in the audit id": (client.get(f"/api/audit/..%2F{MARK}", headers=BEARER), 404),
    }
    for name, (response, status) in cases.items():
        assert response.status_code == status, (name, response.status_code, response.text[:200])
        assert MARK not in response.text and MARK.lower() not in response.text, name
    assert VerdictStore(ctx.run_uri, sample.audit_id).history() == []  # none of them was stored
    ok = client.post(url, content=body, headers={**BEARER, "content-type": "application/json"})
    assert ok.status_code == 200 and ok.json()["labelled"] == 1  # the guard passes a good body through intact


def test_real_server_memory_under_100_oversized_unauthenticated_requests(audited):
    ctx, sample = audited
    port = _free_port()
    proc = start_audit_server(ctx.run_uri, port, TOKENS)
    try:
        idle = rss_kib(proc.pid)["VmRSS"]
        statuses = hostile_flood("127.0.0.1", port, f"/api/audit/{sample.audit_id}/verdicts", requests=100,
                                 declared_mb=200, sent_mb=4, workers=8)
        peak = rss_kib(proc.pid)["VmHWM"]  # the process's peak resident set, since it started
        assert statuses == {401: 100}, statuses
        grown_mb = (peak - idle) / 1024
        print(f"audit server: idle {idle / 1024:.1f} MB, peak {peak / 1024:.1f} MB, +{grown_mb:.1f} MB")
        assert grown_mb < 50
        assert proc.poll() is None  # still serving
        with socket.create_connection(("127.0.0.1", port)) as s:  # and still answers a reviewer
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        proc.kill()
        proc.wait()
    assert os.path.isdir(ctx.run_uri)
