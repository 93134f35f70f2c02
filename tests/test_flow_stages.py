"""The one way a flow runs its stages (flows/stages.py): stop right after ``--until``, in the stated order."""

import pytest

from flows.stages import PHASES, UNTIL_CHOICES, Stages, UntilReached, stops_in
from infra.manifest import Manifest


def _manifest(name: str) -> Manifest:
    return Manifest(stage=name, uri=f"/runs/r/{name}", config_hash="c", resume_key="k", fingerprint="f",
                    row_count=1)


def _walk(until):
    stages, calls = Stages("curate", until), []

    def stage(name):
        calls.append(name)
        return _manifest(name)

    with pytest.raises(UntilReached) as reached:
        for name in PHASES["curate"]:
            stages.run(name, stage, name)
        raise UntilReached(_manifest("(end)"))
    return reached.value.manifest.stage, calls, list(stages.done)


def test_stops_right_after_the_until_stage():
    assert _walk("clips") == ("clips", ["ingest", "segment", "clips"], ["ingest", "segment", "clips"])
    last = PHASES["curate"][-1]
    assert _walk(None)[0] == "(end)" and _walk(last)[0] == last


def test_a_stage_run_out_of_the_stated_order_fails_loudly():
    stages = Stages("post-train", "reward")
    stages.run("pairs", _manifest, "pairs")
    stages.run("dpo-1", _manifest, "dpo-1")
    with pytest.raises(RuntimeError, match="against the stated order"):
        stages.run("reward", _manifest, "reward")


def test_names_outside_the_order_run_but_never_stop():
    stages = Stages("pretrain", "pretrain-256p")
    assert stages.run("my-extra-stage", _manifest, "my-extra-stage").stage == "my-extra-stage"
    with pytest.raises(UntilReached):
        stages.run("pretrain-256p", _manifest, "pretrain-256p")


def test_until_names_one_phase_each():
    assert len(UNTIL_CHOICES) == len(set(UNTIL_CHOICES))
    assert [phase for phase in PHASES if stops_in(phase, "sft-540p")] == ["pretrain"]
    assert not any(stops_in(phase, None) for phase in PHASES)


def test_the_flat_until_choices_are_the_phases_in_order():
    assert UNTIL_CHOICES == tuple(name for names in PHASES.values() for name in names)


def test_replay_reruns_one_published_stage_and_keeps_the_others(make_cfg, tmp_path):
    import os

    import pyarrow as pa

    from infra.stage import StageContext, run_stage
    from infra.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "test", artifact_root=f"file://{tmp_path}/art")
    run_uri = str(tmp_path / "runs" / "r1")
    os.makedirs(run_uri)
    ctx = StageContext("r1", run_uri, make_cfg(), tracker, tracker.start_parent("r1", {}, {}), "abc")
    calls = []

    def body(name):
        def run(work):
            calls.append(name)
            return pa.table({"value": [len(calls)]})
        return run

    def both():
        first = run_stage(ctx, "first", ctx.cfg.stages.clips, [], body("first"))
        return first, run_stage(ctx, "second", ctx.cfg.stages.clips, [first], body("second"))

    both()
    ctx.replay = "second"
    first, second = both()
    assert calls == ["first", "second", "second"]  # the replayed stage ran again, its input was read back
    assert second.row_count == 1 and first.stage == "first"
