"""The stage contract: atomic publish, no half-written output on crash, resume by key, tracking."""

import os

import pyarrow as pa
import pytest

from infra import manifest as mf
from infra.stage import StageContext, run_stage
from infra.tracking import Tracker

SCHEMA = pa.schema([("clip_id", pa.string()), ("value", pa.int64()), ("error", pa.string())])


@pytest.fixture
def ctx(make_cfg, tmp_path):
    cfg = make_cfg()
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "test", artifact_root=f"file://{tmp_path}/art")
    parent = tracker.start_parent("r1", {"a": 1}, {})
    run_uri = str(tmp_path / "runs" / "r1")
    os.makedirs(run_uri)
    return StageContext("r1", run_uri, cfg, tracker, parent, "abc")


def _table(n=3, errors=1):
    rows = [{"clip_id": f"c{i}", "value": i, "error": "bad file" if i < errors else None} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def test_publish_writes_table_and_success_record(ctx):
    calls = []

    def body(work):
        calls.append(work.tmp_uri)
        assert ".demo.tmp-" in work.tmp_uri and os.path.isdir(work.tmp_uri)
        work.metrics["widgets"] = 7
        return _table()

    m = run_stage(ctx, "demo", ctx.cfg.stages.clips, [], body)
    assert (m.row_count, m.error_count) == (3, 1)
    assert mf.load_success(m.uri) == m
    assert list(mf.read_table(m)["clip_id"]) == ["c0", "c1", "c2"]
    assert not os.path.exists(calls[0]), "temporary folder must be renamed away"
    runs = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`reelflow.stage` = 'demo'")
    assert len(runs) == 1 and runs[0].data.tags["mlflow.parentRunId"] == ctx.parent_run
    assert runs[0].data.metrics["widgets"] == 7 and runs[0].data.metrics["rows"] == 3
    assert runs[0].data.params["min_seconds"] == "1.0"
    artifacts = {a.path for a in ctx.tracker.client.list_artifacts(runs[0].info.run_id)}
    assert {"_SUCCESS.json", "sample.csv"} <= artifacts


def test_crash_leaves_nothing_half_written(ctx):
    def body(work):
        with open(os.path.join(work.tmp_uri, "partial.bin"), "wb") as fh:
            fh.write(b"x" * 100)
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        run_stage(ctx, "demo", ctx.cfg.stages.clips, [], body)
    assert os.listdir(ctx.run_uri) == []
    failed = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "tags.`reelflow.stage` = 'demo'")
    assert failed[0].info.status == "FAILED"


def test_resume_skips_only_when_config_and_inputs_match(ctx):
    runs = []

    def body(work):
        runs.append(1)
        return _table()

    first = run_stage(ctx, "a", ctx.cfg.stages.clips, [], body)
    again = run_stage(ctx, "a", ctx.cfg.stages.clips, [], body)
    assert again == first and len(runs) == 1
    changed = ctx.cfg.stages.clips.model_copy(update={"min_seconds": 2.0})
    run_stage(ctx, "a", changed, [], body)
    assert len(runs) == 2
    down = run_stage(ctx, "b", ctx.cfg.stages.clips, [first], body)
    other_input = first.model_copy(update={"fingerprint": "different"})
    run_stage(ctx, "b", ctx.cfg.stages.clips, [other_input], body)
    assert len(runs) == 4 and down.inputs == [first.fingerprint]


def test_stale_tmp_folders_are_cleaned(ctx):
    stale = os.path.join(ctx.run_uri, ".segment.tmp-1234abcd")
    os.makedirs(stale)
    assert mf.clean_stale_tmp(ctx.run_uri) == [stale]
    assert not os.path.exists(stale)


def test_fingerprint_is_content_only():
    assert mf.table_fingerprint(_table()) == mf.table_fingerprint(_table())
    assert mf.table_fingerprint(_table()) != mf.table_fingerprint(_table(errors=2))


def test_inspect_lists_stages_in_pipeline_order_and_flags_unpublished(ctx):
    from infra.inspect import describe_run, describe_stage

    run_stage(ctx, "zeta", ctx.cfg.stages.clips, [], lambda work: _table())
    run_stage(ctx, "alpha", ctx.cfg.stages.clips, [], lambda work: _table())
    os.makedirs(os.path.join(ctx.run_uri, "beta"))  # e.g. a folder left without _SUCCESS.json
    lines = describe_run(ctx.cfg, "r1").splitlines()[2:]
    assert [line.split()[0] for line in lines] == ["zeta", "alpha", "beta"]
    assert "not published" in lines[2]
    report = describe_stage(ctx.cfg, "r1", "alpha")
    assert "error rows (1)" in report and "bad file" in report
