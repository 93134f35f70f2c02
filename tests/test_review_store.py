"""One store for every kind of human review: gates (and the manual review) and pairwise labels keep the
same layout under their own folders, read back through the same code, and a new kind is data."""

from __future__ import annotations

import json
import os
import time

from infra.audit_guard import LABEL, NO_BODY, limit_for
from infra.audit_models import AuditSample, PairAuditSample, PairVerdict, PendingPair, SampledClip, Verdict
from infra.audit_pages import PAGES
from infra.review_store import (
    GATES,
    KINDS,
    PAIRS,
    VerdictStore,
    list_reviews,
    load_review,
    remove_stale_parts,
    save_review,
)


def test_both_kinds_share_the_layout_and_read_back(tmp_path):
    run = str(tmp_path / "run")
    gate = AuditSample(audit_id="D_256p-abc", run_id="run", gate="D_256p", dataset="D_256p", dataset_fingerprint="f",
                       kind="pretrain", mode="interactive", sample_rate=0.5, max_bad_rate=0.15, population=2,
                       clips=[SampledClip(clip_id="c1"), SampledClip(clip_id="c2")])
    pairs = PairAuditSample(audit_id="pairs-12345678", stage_uri="pairs", fingerprint="12345678",
                            pairs=[PendingPair(pair_id="p1", a_uri="pairs/a.mp4", b_uri="pairs/b.mp4")])
    save_review(run, GATES, gate)
    save_review(run, PAIRS, pairs)
    VerdictStore(run, gate.audit_id, GATES).append(Verdict(clip_id="c1", verdict="bad", reason="black", reviewer="ann"))
    VerdictStore(run, gate.audit_id, GATES).append(Verdict(clip_id="c1", verdict="good", reviewer="ann"))
    VerdictStore(run, pairs.audit_id, PAIRS).append(PairVerdict(pair_id="p1", label="tie", reviewer="bob"))
    # The files the run has always had: audits/<id>/ and pair_audits/<id>/, sample.json + verdicts/*.json.
    for root, review, count in (("audits", gate.audit_id, 2), ("pair_audits", pairs.audit_id, 1)):
        folder = os.path.join(run, root, review)
        assert json.load(open(os.path.join(folder, "sample.json")))["audit_id"] == review
        assert len(os.listdir(os.path.join(folder, "verdicts"))) == count
    assert load_review(run, GATES, gate.audit_id) == gate and list_reviews(run, PAIRS) == [pairs]
    assert VerdictStore(run, gate.audit_id).latest()["c1"].verdict == "good"  # the latest verdict counts
    assert [v.verdict for v in VerdictStore(run, gate.audit_id).history()] == ["bad", "good"]  # history stays
    assert VerdictStore(run, pairs.audit_id, PAIRS).reviews() == {"p1": [PairVerdict.model_validate_json(
        open(os.path.join(run, "pair_audits", pairs.audit_id, "verdicts",
                          os.listdir(os.path.join(run, "pair_audits", pairs.audit_id, "verdicts"))[0])).read())]}
    assert GATES.item_ids(gate) == {"c1", "c2"} and PAIRS.item_ids(pairs) == {"p1"}


def test_stale_temporaries_of_every_kind_are_removed(tmp_path):
    run = str(tmp_path)
    old = time.time() - 3600
    for kind in KINDS:
        folder = os.path.join(run, kind.root, "x", "verdicts")
        os.makedirs(folder)
        for name in (".dead.part", "kept.json"):
            open(os.path.join(folder, name), "w").close()
            os.utime(os.path.join(folder, name), (old, old))
    removed = remove_stale_parts(run)
    assert sorted(os.path.relpath(p, run).split(os.sep)[0] for p in removed) == sorted(k.root for k in KINDS)
    assert all(os.path.exists(os.path.join(run, k.root, "x", "verdicts", "kept.json")) for k in KINDS)


def test_every_kind_has_a_page_whose_label_route_takes_a_bounded_body():
    assert {page.kind for page in PAGES} == set(KINDS)
    paths = tuple(page.path for page in PAGES)
    for page in PAGES:
        assert limit_for(f"/api/{page.path}/some-id/verdicts", paths) == LABEL
        assert limit_for(f"/api/{page.path}/some-id", paths) == NO_BODY
    assert limit_for("/api/other/some-id/verdicts", paths) == NO_BODY
