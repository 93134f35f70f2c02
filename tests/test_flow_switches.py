"""A stage switched off in the config cannot be the stage `--until` stops after: the run says so before any
work instead of running past it."""

from __future__ import annotations

import pytest


def test_until_a_switched_off_stage_is_refused(make_cfg):
    from flows.distill import distill_flow
    from flows.post_train import post_train_flow  # .fn: the flow body, without Prefect's parameter checks

    cfg = make_cfg("post.dmd.enabled=false", "stages.captioner_distill.enabled=false")
    with pytest.raises(ValueError, match="post.dmd.enabled=false"):
        post_train_flow.fn(cfg, "off", {cfg.post.pairs.dataset: None}, None, until="distill-dmd")
    with pytest.raises(ValueError, match="stages.captioner_distill.enabled=false"):
        distill_flow.fn(cfg, "off", {}, until="captioner-distill")


@pytest.mark.parametrize("name", ["sft-i2v", "sft-camera"])
def test_until_a_switched_off_post_training_extra_is_refused(make_cfg, name):
    from flows.post_train import extra_enabled, post_train_flow

    cfg = make_cfg(f"train.stages.{name}.enabled=false")
    assert not extra_enabled(cfg, name) and extra_enabled(make_cfg(), name)
    with pytest.raises(ValueError, match=f"train.stages.{name}.enabled=false"):
        post_train_flow.fn(cfg, "off", {cfg.post.pairs.dataset: None}, None, until=name)


def test_a_training_stage_from_a_checkpoint_the_run_never_made_names_the_fix(make_cfg):
    """post.dpo.rounds=1 leaves no dpo-3, which forcing starts from by default: a clear error, not a KeyError."""
    from flows.pretrain import train_stage
    from infra.config import ConfigError

    cfg = make_cfg("post.dpo.rounds=1")
    with pytest.raises(ConfigError, match=r"forcing\.init_from is 'dpo-3'.*it has: sft-540p, dpo-1"):
        train_stage(None, cfg, {}, "forcing", {"sft-540p": None, "dpo-1": None})
