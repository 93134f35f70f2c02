"""Pairwise audit of the human preference pairs: store, web API (auth, no traversal, validation),
file mode and the interactive wait of ``tasks.post.lib.pair_audit.human_labels``."""

import json
import threading
import time

import pandas as pd
import pytest
from audit_helpers import audit_cfg
from fastapi.testclient import TestClient
from pair_audit_helpers import pairs_run
from synthetic_pool import stage_ctx

from infra.audit_app import create_app
from infra.manifest import read_table
from infra.pair_audit_store import (
    PairVerdict,
    PairVerdictStore,
    list_pair_audits,
    load_pair_sample,
    open_pair_audit,
    pair_audit_id,
)
from tasks.curate.lib.audit import AuditIncomplete
from tasks.post.lib.pair_audit import apply_labels, human_labels

TOKENS = {"tok-alice-123": "alice"}
BEARER = {"Authorization": "Bearer tok-alice-123"}


@pytest.fixture
def run(make_cfg, tmp_path):
    ctx = stage_ctx(make_cfg(), tmp_path)
    manifest, pending = pairs_run(ctx)
    return ctx, manifest, pending


def test_sample_holds_only_pending_usable_human_pairs(run):
    ctx, manifest, pending = run
    sample = open_pair_audit(ctx.run_uri, manifest)
    assert [p.pair_id for p in sample.pairs] == pending and len(pending) == 3  # no auto, discarded or error row
    assert open_pair_audit(ctx.run_uri, manifest).created_at == sample.created_at  # written once
    assert [s.audit_id for s in list_pair_audits(ctx.run_uri)] == [pair_audit_id(manifest)]
    with pytest.raises(ValueError, match="name the worse video's failure"):
        PairVerdict(pair_id=pending[0], label="a")
    with pytest.raises(ValueError):
        PairVerdict(pair_id=pending[0], label="b", failure="ugly")  # not in the motion-failure taxonomy
    assert PairVerdict(pair_id=pending[0], label="tie", failure="excess motion").failure is None


def test_web_api_auth_validation_and_no_traversal(run, tmp_path):
    ctx, manifest, pending = run
    client = TestClient(create_app(ctx.run_uri, TOKENS))
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer tok-mallory-99"}).status_code == 401
    index = client.get("/", headers=BEARER)  # the index opens the published pairs stage's audit
    assert index.status_code == 200 and "Preference pairs" in index.text and "0 / 3" in index.text
    aid = pair_audit_id(manifest)
    assert client.get(f"/pairs/{aid}").status_code == 401 and client.get(f"/pair-video/{aid}/{pending[0]}/a").status_code == 401
    page = client.get(f"/pairs/{aid}", headers=BEARER).text
    assert "Better A (1)" in page and "physics violation (P)" in page
    assert "human pairs</b>: two text-to-video samples of the same prompt" in page  # what kind of pair this is
    state = client.get(f"/api/pairs/{aid}", headers=BEARER).json()
    assert all(p["kind"] == "human" and p["kind_text"].startswith("human pair: two text-to-video samples")
               for p in state["pairs"])
    sample = load_pair_sample(ctx.run_uri, aid)
    assert not any(p.a_uri.startswith("/") or p.b_uri.startswith("/") for p in sample.pairs)  # relative to the run
    assert sample.stage_uri == "pairs"
    video = client.get(f"/pair-video/{aid}/{pending[0]}/b", headers={**BEARER, "Range": "bytes=0-49"})
    assert video.status_code == 206 and video.headers["content-type"] == "video/mp4" and len(video.content) == 50

    sample = load_pair_sample(ctx.run_uri, aid)  # a tampered sample pointing outside the run is refused
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"secret")
    sample.pairs[1].a_uri = str(secret)
    from infra.audit_store import audit_uri, write_durably

    write_durably(f"{audit_uri(ctx.run_uri, aid, 'pair_audits')}/sample.json", sample.model_dump_json())
    assert client.get(f"/pair-video/{aid}/{pending[1]}/a", headers=BEARER).status_code == 403
    for bad in (f"/pair-video/{aid}/{pending[0]}/c", f"/pair-video/{aid}/..%2F..%2Fsecret.mp4/a",
                f"/pair-video/..%2F{aid}/{pending[0]}/a", f"/pair-video/{aid}/{'ee' * 8}/a", f"/pairs/{aid}..",
                "/pair-video/%2Fetc%2Fpasswd/x/a", f"/api/pairs/{aid}%2F..%2F..%2Faudits"):
        assert client.get(bad, headers=BEARER).status_code == 404, bad

    url = f"/api/pairs/{aid}/verdicts"
    for body, code in [({"pair_id": pending[0], "label": "c"}, 422),  # no such label
                       ({"pair_id": pending[0], "label": "a"}, 422),  # better A: the worse one's failure is needed
                       ({"pair_id": pending[0], "label": "b", "failure": "ugly"}, 422),
                       ({"pair_id": "ee" * 8, "label": "tie"}, 404),  # an error row is not pending
                       ({"pair_id": "../../x", "label": "tie"}, 422)]:
        assert client.post(url, json=body, headers=BEARER).status_code == code, body
    assert client.post(url, json={"pair_id": pending[0], "label": "tie"}).status_code == 401
    ok = client.post(url, json={"pair_id": pending[0], "label": "a", "failure": "excess motion"}, headers=BEARER)
    assert ok.status_code == 200 and ok.json()["labelled"] == 1 and ok.json()["by_failure"] == {"excess motion": 1}
    assert human_labels(ctx.run_uri, manifest) == {pending[0]: {"label": "a", "failure": "excess motion",
                                                                "reviewer": "alice"}}


def test_file_mode_labels_logs_and_applies(run, tmp_path):
    ctx, manifest, pending = run
    PairVerdictStore(ctx.run_uri, pair_audit_id(manifest)).append(  # a reviewer was here first: that label wins
        PairVerdict(pair_id=pending[2], label="b", failure="unnatural motion", reviewer="alice"))
    path = tmp_path / "verdicts.json"
    path.write_text(json.dumps({"D_540p": [{"clip_id": "c0", "verdict": "good"}],  # a gate's verdicts, ignored
                                "pairs": {pending[0]: {"label": "a", "failure": "subject distortion"}}}))
    cfg = audit_cfg(mode="file", verdicts_file=str(path))
    with pytest.raises(AuditIncomplete, match="no label for 1 of 3 pending human pairs"):
        human_labels(ctx, manifest, cfg)
    path.write_text(json.dumps({pending[0]: {"label": "a", "failure": "subject distortion"},
                                pending[1]: {"label": "tie", "failure": None},
                                pending[2]: {"label": "a", "failure": "physics violation"}}))
    labels = human_labels(ctx, manifest, cfg)
    assert labels == {pending[0]: {"label": "a", "failure": "subject distortion", "reviewer": "verdicts.json"},
                      pending[1]: {"label": "tie", "failure": None, "reviewer": "verdicts.json"},
                      pending[2]: {"label": "b", "failure": "unnatural motion", "reviewer": "alice"}}
    runs = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`reelflow.stage` = 'audit_pairs'")
    assert len(runs) == 1 and runs[0].data.metrics["ties"] == 1 and runs[0].data.metrics["labelled"] == 3
    assert "pair_verdicts.json" in {a.path for a in ctx.tracker.client.list_artifacts(runs[0].info.run_id)}
    assert human_labels(ctx, manifest, cfg) == labels  # the same labels again: not logged twice
    assert len(ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`reelflow.stage` = 'audit_pairs'")) == 1

    df = read_table(manifest)
    out = apply_labels(df, labels)
    human = out[out["pair_id"].isin(pending)].set_index("pair_id")
    assert list(human.loc[pending, "label"]) == ["a", "tie", "b"]
    assert list(human.loc[pending, "label_source"]) == ["human"] * 3
    assert human.at[pending[1], "failure"] is None and human.at[pending[2], "failure"] == "unnatural motion"
    rest = out[~out["pair_id"].isin(pending)]
    pd.testing.assert_frame_equal(rest, df[~df["pair_id"].isin(pending)])  # other rows untouched
    assert list(df["label_source"]).count("pending") == 5  # the input is not modified


def test_interactive_mode_waits_and_resumes(run):
    ctx, manifest, pending = run
    with pytest.raises(AuditIncomplete, match="3 of 3 human pairs still unlabelled"):
        human_labels(ctx, manifest, audit_cfg(wait_timeout_s=0.3))
    client = TestClient(create_app(ctx.run_uri, TOKENS))
    url = f"/api/pairs/{pair_audit_id(manifest)}/verdicts"
    assert client.post(url, json={"pair_id": pending[0], "label": "tie"}, headers=BEARER).status_code == 200
    out = {}
    waiter = threading.Thread(target=lambda: out.setdefault("labels", human_labels(ctx, manifest, audit_cfg())))
    waiter.start()  # the re-run: the label given before is kept
    time.sleep(0.4)
    assert waiter.is_alive()
    for pid in pending[1:]:
        assert client.post(url, json={"pair_id": pid, "label": "b", "failure": "insufficient motion"},
                           headers=BEARER).status_code == 200
    waiter.join(10)
    assert [out["labels"][p]["label"] for p in pending] == ["tie", "b", "b"]
    assert human_labels(ctx.run_uri, manifest, wait=False) == out["labels"]
