"""The captioner's fine-tuning as a training job: step checkpoints it resumes from to the same weights, and
the training launcher's workers summing gradients to the single-process step."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

from infra.config_caption import CaptionerConfig
from models.caption_schema import StructuredCaption
from models.captioner_tune import fine_tune, supervised_example


def _caption(shot: str, yaw: str) -> str:
    return StructuredCaption.model_validate({
        "subjects": [{"TYPES": {"type": "object", "sub_type": "thing"}, "appearance": "red", "action": "stands",
                      "expression": None, "position": "left", "is_main_subject": True}],
        "shot_type": shot, "shot_angle": "eye level", "shot_position": "front",
        "camera_motion": {"yaw": yaw, "speed": "static" if yaw == "0" else "slow"}, "environment": "street",
        "lighting": "day"}).model_dump_json()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoTokenizer, Qwen2_5_VLConfig

    from models.captioner import build_tiny_captioner

    folder = build_tiny_captioner(str(tmp_path_factory.mktemp("captioner") / "tiny"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vision = Qwen2_5_VLConfig.from_pretrained(folder).vision_config
    cfg = CaptionerConfig()
    answers = [_caption("close-up", "+"), _caption("long", "0"), _caption("medium", "-")]
    examples = [supervised_example(tokenizer, vision, np.full((4, 56, 84, 3), 40 + 60 * i, np.uint8), 2.0, a,
                                   cfg.min_pixels, cfg.max_pixels) for i, a in enumerate(answers)]
    return folder, examples


def _model(folder: str):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)


class Stop(Exception):
    pass


def test_a_stopped_fine_tuning_resumes_from_its_step_checkpoint_to_the_same_weights(setup, tmp_path):
    folder, examples = setup
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = {"lr": 3e-3, "epochs": 2, "batch": 2, "seed": 0}  # 2 steps per epoch: 4 steps
        whole = _model(folder)
        whole_losses = fine_tune(whole, examples, **args)

        def stop_at_3(step, loss):
            if step == 2:  # the third step done, its checkpoint (every 2) not yet: the resume redoes it
                raise Stop

        steps = str(tmp_path / "steps")
        with pytest.raises(Stop):
            fine_tune(_model(folder), examples, **args, steps_dir=steps, checkpoint_every=2, on_step=stop_at_3)
        assert sorted(os.listdir(steps)) == ["step-00000002.pt"]  # nothing half-written beside it
        resumed = _model(folder)
        seen = []
        losses = fine_tune(resumed, examples, **args, steps_dir=steps, checkpoint_every=2,
                           on_step=lambda step, loss: seen.append(step))
    finally:
        torch.set_num_threads(threads)
    assert seen == [2, 3]  # only the steps after the checkpoint ran again
    assert losses == pytest.approx(whole_losses, rel=1e-6)
    assert sorted(os.listdir(steps)) == ["step-00000004.pt"]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(whole.state_dict().values(), _model(folder).state_dict().values(),
                                                    strict=True))  # it trained


@pytest.mark.slow
def test_two_launcher_workers_train_the_same_captioner_as_one(setup, tmp_path):
    from infra.config_train import TrainConfig
    from tasks.curate.lib.captioner_train import save_examples, train_captioner
    from tasks.train.lib.launch import launch

    folder, examples = setup
    save_examples(examples, str(tmp_path / "examples.pt"))
    out = {}
    for workers in (1, 2):
        job = {"base": folder, "examples": str(tmp_path / "examples.pt"), "out_dir": str(tmp_path / f"out{workers}"),
               "steps_dir": str(tmp_path / f"steps{workers}"), "checkpoint_every": 2, "lr": 3e-3, "epochs": 2,
               "batch": 3, "seed": 0, "weight_decay": 0.0, "torch_threads": 1}
        losses = launch(train_captioner, job, TrainConfig(num_workers=workers))
        out[workers] = losses, _model(job["out_dir"]).state_dict()
    assert out[2][0] == pytest.approx(out[1][0], rel=1e-5)
    for name, a in out[1][1].items():
        torch.testing.assert_close(out[2][1][name], a, rtol=1e-4, atol=1e-5, msg=name)


def test_the_expert_fields_tokens_carry_the_field_weight(setup):
    from models.captioner_tune import field_value_spans, weighted_loss

    folder, examples = setup
    answer = _caption("close-up", "+")
    spans = [answer[a:b] for a, b in field_value_spans(answer)]
    assert spans == ["object", "close-up", "eye level", "front", "0", "0", "0", "0", "0", "+", "slow"]
    from transformers import AutoTokenizer, Qwen2_5_VLConfig

    tokenizer = AutoTokenizer.from_pretrained(folder)
    vision = Qwen2_5_VLConfig.from_pretrained(folder).vision_config
    cfg = CaptionerConfig()
    frames = np.full((4, 56, 84, 3), 40, np.uint8)
    plain = supervised_example(tokenizer, vision, frames, 2.0, answer, cfg.min_pixels, cfg.max_pixels)
    heavy = supervised_example(tokenizer, vision, frames, 2.0, answer, cfg.min_pixels, cfg.max_pixels, 5.0)
    answer_tokens = int((plain["labels"] != -100).sum())
    assert float(plain["weights"].sum()) == answer_tokens  # weight 1: every answer token once, the prompt 0
    value_tokens = [tokenizer.decode([t]) for t, w in zip(heavy["input_ids"][0], heavy["weights"][0], strict=True) if w == 5.0]
    # Exactly the tokens holding the values (BPE may merge a value with its quotes, as '":"+",'), no key's.
    assert re.sub(r'[":,]', "", "".join(value_tokens)) == "".join(spans)
    model = _model(folder)
    with torch.no_grad():
        mean = float(model(**{k: v for k, v in plain.items() if k != "weights"}).loss)
        assert float(weighted_loss(model, plain)) / answer_tokens == pytest.approx(mean, rel=1e-4)
