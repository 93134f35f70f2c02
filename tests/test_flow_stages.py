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
