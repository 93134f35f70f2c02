"""The manual review (report 3.1, ``D_720p_sft = ManualFilter(D_540p_sft)``): the audit page and
`reelflow audit status` count what the dataset keeps, with tolerated reasons and several reviewers."""

import pandas as pd
import pytest
from audit_helpers import audit_run
from fastapi.testclient import TestClient
from synthetic_pool import publish

from infra import manifest as mf
from infra.audit_app import create_app
from infra.audit_store import Verdict, VerdictStore, list_audits
from infra.audit_view import status_lines
from infra.config_datasets import AuditConfig, DatasetsConfig
from tasks.curate import datasets
from tasks.curate.lib.audit import AuditIncomplete


def test_manual_review_numbers_match_what_the_dataset_keeps(make_cfg, tmp_path):
    ctx, clips = audit_run(make_cfg(), tmp_path, n_clips=6)
    df = mf.read_table(clips).assign(in_D_540p_sft=[True] * 5 + [False])
    base = publish(ctx, pd.DataFrame(df), "D_540p_sft")
    ids = df.clip_id.tolist()
    audit = AuditConfig(mode="interactive", poll_s=0.05, wait_timeout_s=0.2,
                        gates={"D_720p_sft": {"dataset": "D_720p_sft", "kind": "posttrain", "tolerate": ["wrong caption"]}})
    with pytest.raises(AuditIncomplete):  # the review opens and waits for reviewers
        datasets.build_dataset(ctx, DatasetsConfig(), "D_720p_sft", base, audit)
    (review,) = [a for a in list_audits(ctx.run_uri) if a.gate == "D_720p_sft_manual"]
    assert review.tolerate == ["wrong caption"] and [c.clip_id for c in review.clips] == ids[:5]
    store = VerdictStore(ctx.run_uri, review.audit_id)
    alice = {ids[0]: ("bad", "wrong caption"), ids[1]: ("bad", "mosaic"), ids[2]: ("good", None),
             ids[3]: ("good", None), ids[4]: ("good", None)}
    for clip_id, (verdict, reason) in alice.items():
        store.append(Verdict(clip_id=clip_id, verdict=verdict, reason=reason, reviewer="alice"))
    store.append(Verdict(clip_id=ids[2], verdict="bad", reason="black", reviewer="bob"))  # bob disagrees on clip 2
    built = datasets.build_dataset(ctx, DatasetsConfig(), "D_720p_sft", base, audit)
    kept = set(mf.read_table(built).query("in_D_720p_sft").clip_id)
    assert kept == {ids[0], ids[3], ids[4]}  # tolerated reason kept; any reviewer's Bad removes
    assert built.stats["kept"] == 3

    text = "\n".join(status_lines(ctx.run_uri))
    assert "manual review of every clip: 5/5 labelled, kept 3 (Good or tolerated), removed 2; the published " \
           "D_720p_sft keeps 3" in text
    assert "reviewers disagree on 1 clips" in text
    page = TestClient(create_app(ctx.run_uri, {"tok-alice-123": "alice"})).get(
        "/", headers={"Authorization": "Bearer tok-alice-123"}).text
    assert "removed 2, kept 3 (published D_720p_sft keeps 3)" in page
