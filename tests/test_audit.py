"""Audit gates: sampling rates, durable verdicts, file / simulated / interactive modes, the web app."""

import json
import os
import socket
import threading
import time

import httpx
import pandas as pd
import pytest
from audit_helpers import audit_cfg, audit_run, start_audit_server
from fastapi.testclient import TestClient
from synthetic_pool import publish

from infra.audit_app import create_app, parse_tokens
from infra.audit_store import (
    AuditSample,
    SampledClip,
    Verdict,
    VerdictStore,
    evaluate,
    list_audits,
    save_sample,
)
from tasks.curate.lib import audit
from tasks.curate.lib.audit import AuditFailed, AuditIncomplete, audit_gate, open_audit

TOKENS = {"tok-alice-123": "alice"}


def test_sample_sizes_follow_the_report_with_a_minimum():
    cfg = audit_cfg(min_sample=20)
    assert cfg.rate_and_threshold("D_256p") == (0.0001, 0.15)  # pre-training: 0.01%, < 15%
    assert cfg.rate_and_threshold("D_540p_sft") == (0.001, 0.03)  # post-training: 0.1%, < 3%
    assert audit.sample_size(1_000_000, 0.0001, 20, 500) == 100
    assert audit.sample_size(1_000_000, 0.001, 20, 500) == 500
    assert audit.sample_size(5_000, 0.0001, 20, 500) == 20  # small runs still audit
    assert audit.sample_size(7, 0.0001, 20, 500) == 7


def _sample(n=10, threshold=0.15):
    return AuditSample(audit_id="g-1", run_id="r", gate="g", dataset="D", dataset_fingerprint="f", kind="pretrain",
                       mode="interactive", sample_rate=0.1, max_bad_rate=threshold, population=100,
                       clips=[SampledClip(clip_id=f"c{i}") for i in range(n)])




def test_threshold_is_strict():
    s = _sample(20)
    verdicts = {f"c{i}": Verdict(clip_id=f"c{i}", verdict="good") for i in range(20)}
    for i in range(2):
        verdicts[f"c{i}"] = Verdict(clip_id=f"c{i}", verdict="bad", reason="black")
    assert evaluate(s, verdicts).passed  # 10% < 15%
    verdicts["c2"] = Verdict(clip_id="c2", verdict="bad", reason="text")
    r = evaluate(s, verdicts)
    assert r.complete and not r.passed and r.by_reason == {"black": 2, "text": 1}  # 15% is not below 15%
    s.tolerate = ["text"]  # a gate whose profile keeps text on purpose
    r = evaluate(s, verdicts)
    assert r.passed and r.bad == 2 and r.tolerated == {"text": 1} and r.by_reason == {"black": 2}
    with pytest.raises(ValueError, match="needs a reason"):
        Verdict(clip_id="c0", verdict="bad")
    with pytest.raises(ValueError):
        Verdict(clip_id="c0", verdict="bad", reason="ugly")  # not in the taxonomy


def test_verdicts_are_durable_and_latest_wins(tmp_path):
    store = VerdictStore(str(tmp_path), "g-1")
    store.append(Verdict(clip_id="c1", verdict="bad", reason="text", reviewer="a"))
    store.append(Verdict(clip_id="c1", verdict="good", reviewer="b"))
    open(os.path.join(store.uri, ".partial.part"), "w").write('{"clip_id": "c2", "verd')  # a killed write
    again = VerdictStore(str(tmp_path), "g-1")  # another process, later
    assert len(again.history()) == 2 and again.latest()["c1"].verdict == "good"


def test_file_mode_pass_fail_and_missing(make_cfg, tmp_path):
    ctx, ds = audit_run(make_cfg(), tmp_path)
    sample = open_audit(ctx, audit_cfg(), "D_540p", ds)
    ids = [c.clip_id for c in sample.clips]
    assert len(ids) == 4 and sample.population == 6
    path = tmp_path / "verdicts.json"
    path.write_text(json.dumps({"D_540p": [{"clip_id": c, "verdict": "good"} for c in ids]}))
    assert audit_gate(ctx, audit_cfg(mode="file", verdicts_file=str(path)), "D_540p", ds) == ds
    runs = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`reelflow.stage` = 'audit_D_540p'")
    assert runs[0].data.metrics["bad_case_rate"] == 0.0
    assert "verdicts.json" in {a.path for a in ctx.tracker.client.list_artifacts(runs[0].info.run_id)}

    ctx2, ds2 = audit_run(None, None, n_clips=8, ctx=ctx, salt="second")  # another dataset, another audit
    ids2 = [c.clip_id for c in open_audit(ctx2, audit_cfg(), "D_540p", ds2).clips]
    path.write_text(json.dumps([{"clip_id": ids2[0], "verdict": "bad", "reason": "mosaic"}]))
    with pytest.raises(AuditIncomplete, match="no verdict for 3 of 4"):
        audit_gate(ctx2, audit_cfg(mode="file", verdicts_file=str(path)), "D_540p", ds2)
    path.write_text(json.dumps([{"clip_id": ids2[0], "verdict": "bad", "reason": "mosaic"}]
                               + [{"clip_id": c, "verdict": "good"} for c in ids2[1:]]))
    with pytest.raises(AuditFailed, match=r"FAILED: 1/4 bad \(25.0%, must be below 15%\).*mosaic 1"):
        audit_gate(ctx2, audit_cfg(mode="file", verdicts_file=str(path)), "D_540p", ds2)
    failed = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`reelflow.audit_mode` = 'file' "
                                            "and attributes.status = 'FAILED'")
    assert len(failed) == 1 and failed[0].data.metrics["bad_case_rate"] == 0.25


def test_interactive_gate_waits_and_survives_a_killed_flow(make_cfg, tmp_path):
    ctx, ds = audit_run(make_cfg(), tmp_path)
    with pytest.raises(AuditIncomplete, match="4 of 4 clips still unlabelled"):  # the flow "dies" waiting
        audit_gate(ctx, audit_cfg(wait_timeout_s=0.3), "D_540p", ds)
    (sample,) = list_audits(ctx.run_uri)
    client = TestClient(create_app(ctx.run_uri, TOKENS))
    headers = {"Authorization": "Bearer tok-alice-123"}
    first = client.post(f"/api/audit/{sample.audit_id}/verdicts", headers=headers,
                        json={"clip_id": sample.clips[0].clip_id, "verdict": "good"})
    assert first.status_code == 200 and first.json()["labelled"] == 1
    result = {}
    gate = threading.Thread(target=lambda: result.setdefault("m", audit_gate(ctx, audit_cfg(), "D_540p", ds)))
    gate.start()  # the re-run: same sample, the verdict given before is kept
    time.sleep(0.5)
    assert gate.is_alive()
    for c in sample.clips[1:]:
        assert client.post(f"/api/audit/{sample.audit_id}/verdicts", headers=headers,
                           json={"clip_id": c.clip_id, "verdict": "good"}).status_code == 200
    gate.join(10)
    assert result["m"] == ds
    assert {v.reviewer for v in VerdictStore(ctx.run_uri, sample.audit_id).history()} == {"alice"}


def test_web_app_auth_and_no_traversal(make_cfg, tmp_path):
    ctx, ds = audit_run(make_cfg(), tmp_path)
    sample = open_audit(ctx, audit_cfg(), "D_540p", ds)
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"secret")
    sample.clips[1].clip_uri = str(outside)  # a tampered / foreign URI is refused
    save_sample(ctx.run_uri, sample)
    client = TestClient(create_app(ctx.run_uri, TOKENS))
    aid, cid = sample.audit_id, sample.clips[0].clip_id
    assert client.get("/").status_code == 401 and client.get(f"/clip/{aid}/{cid}").status_code == 401
    assert client.get("/login", params={"token": "wrong-token"}).status_code == 401
    assert client.get("/login", params={"token": "tok-alice-123"}, follow_redirects=False).status_code == 303
    page = client.get("/")  # the cookie is set now
    assert page.status_code == 200 and aid in page.text and "0 / 4" in page.text
    assert "Bad: effects/stickers" in client.get(f"/audit/{aid}").text
    video = client.get(f"/clip/{aid}/{cid}", headers={"Range": "bytes=0-99"})
    assert video.status_code == 206 and video.headers["content-type"] == "video/mp4" and len(video.content) == 100
    assert client.get(f"/clip/{aid}/{sample.clips[1].clip_id}").status_code == 403
    for bad in (f"/clip/{aid}/..%2F..%2Fsecret.mp4", f"/clip/..%2F{aid}/{cid}", f"/clip/{aid}/{'0' * 16}",
                "/clip/%2Fetc%2Fpasswd/x", f"/audit/{aid}..", "/static/../audit_app.py"):
        assert client.get(bad).status_code == 404, bad
    posted = client.post(f"/api/audit/{aid}/verdicts", json={"clip_id": cid, "verdict": "bad"})
    assert posted.status_code == 422  # a bad verdict needs a reason
    other = client.post(f"/api/audit/{aid}/verdicts", json={"clip_id": "ffff0000", "verdict": "good"})
    assert other.status_code == 404
    with pytest.raises(ValueError):
        parse_tokens("alice:short")
    assert parse_tokens("alice:tok-alice-123, bob:tok-bob-4567") == {"tok-alice-123": "alice", "tok-bob-4567": "bob"}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(run_uri, port):
    return start_audit_server(run_uri, port, {"tok-alice-123": "alice"}, tries=100)


def test_killed_server_loses_no_verdict(make_cfg, tmp_path):
    ctx, ds = audit_run(make_cfg(), tmp_path)
    sample = open_audit(ctx, audit_cfg(), "D_540p", ds)
    port = _free_port()
    headers = {"Authorization": "Bearer tok-alice-123"}
    url = f"http://127.0.0.1:{port}/api/audit/{sample.audit_id}"
    proc = _server(ctx.run_uri, port)
    try:
        for c in sample.clips[:3]:
            r = httpx.post(f"{url}/verdicts", json={"clip_id": c.clip_id, "verdict": "bad", "reason": "text"},
                           headers=headers)
            assert r.status_code == 200
    finally:
        proc.kill()  # SIGKILL: no shutdown hook runs
        proc.wait()
    proc = _server(ctx.run_uri, port)
    try:
        state = httpx.get(url, headers=headers).json()["state"]
        assert state["labelled"] == 3 and state["by_reason"] == {"text": 3}
    finally:
        proc.kill()
        proc.wait()


def test_simulated_mode_uses_truth_and_says_so(make_cfg, tmp_path):
    from tasks.corpus import generate_video

    cfg = make_cfg("corpus.width=160", "corpus.height=90", "corpus.shots_per_video=[6,6]", "corpus.defect_rate=0.5")
    truth = generate_video("film_0000", 11, cfg.corpus, str(tmp_path / "corpus"))
    src = str(tmp_path / "corpus" / "film_0000.mp4")
    rows = [{"clip_id": f"{s.index:016x}", "source_uri": src, "start_frame": s.start_frame, "end_frame": s.end_frame,
             "clip_uri": None, "error": None, "category": s.category, "in_D_540p": True} for s in truth.shots]
    from synthetic_pool import stage_ctx

    ctx = stage_ctx(cfg, tmp_path)
    ds = publish(ctx, pd.DataFrame(rows), "D_540p")
    acfg = audit_cfg(mode="simulated", min_sample=6, gates={"D_540p": {"dataset": "D_540p", "max_bad_rate": 1.0}})
    assert audit_gate(ctx, acfg, "D_540p", ds) == ds
    (sample,) = list_audits(ctx.run_uri)
    assert sample.simulated and sample.audit_id.endswith("-simulated")
    latest = VerdictStore(ctx.run_uri, sample.audit_id).latest()
    assert {v.source for v in latest.values()} == {"simulated"}
    expected_bad = {f"{s.index:016x}" for s in truth.shots
                    if any(d.kind in audit.DEFECT_REASON and d.start_frame < s.end_frame and d.end_frame > s.start_frame
                           for d in truth.defects)}
    assert expected_bad and {c for c, v in latest.items() if v.verdict == "bad"} == expected_bad
    runs = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`reelflow.audit_simulated` = 'true'")
    assert runs and "D_540p" in runs[0].info.run_name and "simulated" in runs[0].info.run_name
    client = TestClient(create_app(ctx.run_uri, TOKENS))
    r = client.post(f"/api/audit/{sample.audit_id}/verdicts", headers={"Authorization": "Bearer tok-alice-123"},
                    json={"clip_id": sample.clips[0].clip_id, "verdict": "good"})
    assert r.status_code == 409
    assert "SIMULATED" in client.get("/", headers={"Authorization": "Bearer tok-alice-123"}).text

    _, ds2 = audit_run(None, None, ctx=ctx, salt="real")  # no corpus truth beside these clips
    with pytest.raises(AuditIncomplete, match="only for the generated corpus"):
        audit_gate(ctx, audit_cfg(mode="simulated"), "D_540p", ds2)
