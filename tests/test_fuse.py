"""Caption fusion (issue 4): T2V dense order, I2V sparse field dropout (p, seeded), enhancer, backends."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from infra.config_caption import FuseConfig
from models.caption_schema import StructuredCaption
from tasks.curate.lib.fuse import Fuser, dropout_rng, enhance_prompt, i2v_sparse, sparse_fields, t2v_dense

CAPTION = StructuredCaption.model_validate({
    "subjects": [
        {"TYPES": {"type": "animal", "sub_type": "dog"}, "appearance": "small brown", "action": "runs beside her",
         "expression": None, "position": "left", "is_main_subject": False},
        {"TYPES": {"type": "human", "sub_type": "woman"}, "appearance": "in a red coat", "action": "walks toward the camera",
         "expression": {"emotion": "happy", "intensity": "slight", "change": "neutral to happy"},
         "position": "centre foreground", "is_main_subject": True}],
    "shot_type": "medium", "shot_angle": "low", "shot_position": "front",
    "camera_motion": {"tz": "+", "speed": "slow"}, "environment": "a rainy city street at night", "lighting": "neon"})


def test_t2v_dense_follows_the_report_order():
    text = t2v_dense(CAPTION)
    marks = ["medium shot", "low angle", "woman", "in a red coat", "walks toward", "slight happy", "centre foreground",
             "dog", "rainy city street", "Neon lighting", "slow dolly in"]
    positions = [text.find(m) for m in marks]
    assert -1 not in positions, (marks, text)
    assert positions == sorted(positions), text  # shot -> main subject -> others -> environment, light, camera


def test_i2v_sparse_keeps_actions_expression_camera_not_appearance():
    text = i2v_sparse(sparse_fields(CAPTION, 0.0, dropout_rng("clip", 0)))
    for mark in ("woman walks toward the camera", "slight happy", "dog runs", "slow dolly in"):
        assert mark in text, text
    assert "red coat" not in text and "rainy" not in text


def test_i2v_field_dropout_rate_and_seeding():
    draws = [sparse_fields(CAPTION, 0.1, dropout_rng(f"clip-{i}", 0)) for i in range(1500)]
    fields = [[bool(s["action"]), bool(s["expression"])] for d in draws for s in d["subjects"][:1]]
    fields += [[bool(d["camera_motion"])] for d in draws]
    kept = np.mean([f for row in fields for f in row])
    assert 0.87 < kept < 0.93  # each field dropped with p = 0.1
    again = sparse_fields(CAPTION, 0.1, dropout_rng("clip-7", 0))
    assert again == draws[7]  # same clip, same seed: same prompt
    other = [sparse_fields(CAPTION, 0.1, dropout_rng(f"clip-{i}", 1)) for i in range(200)]
    assert other != draws[:200]
    assert all(d["subjects"][0]["subject"] == "woman" for d in draws)  # the subject itself is never dropped


def test_everything_dropped_still_names_the_subject():
    assert i2v_sparse(sparse_fields(CAPTION, 0.999, dropout_rng("x", 0))) == "The woman."


def test_template_fuser_and_enhancer():
    fuser = Fuser(FuseConfig())
    t2v, i2v = fuser.fuse("clip-1", CAPTION)
    assert t2v == t2v_dense(CAPTION) and i2v == i2v_sparse(sparse_fields(CAPTION, 0.1, dropout_rng("clip-1", 0)))
    assert enhance_prompt("  a cat   sleeping on a sofa ", FuseConfig()) == "A cat sleeping on a sofa."
    assert fuser.fallbacks == 0


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm installed: the guard is not exercised")
def test_llm_backend_without_vllm_fails_with_a_clear_message():
    with pytest.raises(RuntimeError, match="fuse.backend=template"):
        Fuser(FuseConfig(backend="vllm", llm_path="/models/qwen2.5-32b"))


def test_llm_answers_that_are_empty_or_overlong_fall_back_to_the_template():
    class FakeLLM:
        def __init__(self, answers):
            self.answers = iter(answers)

        def chat(self, chats, params, use_tqdm=False):
            return [type("O", (), {"outputs": [type("C", (), {"text": a})]}) for a in (next(self.answers) for _ in chats)]

    fuser = Fuser(FuseConfig(max_chars=100))
    fuser.llm, fuser.params = FakeLLM(["  ", "x" * 101]), None
    assert fuser.fuse("c", CAPTION) == (t2v_dense(CAPTION), i2v_sparse(sparse_fields(CAPTION, 0.1, dropout_rng("c", 0))))
    assert fuser.fallbacks == 2
    fuser.llm = FakeLLM([])  # the LLM call itself raises (StopIteration): template, counted
    assert fuser.fuse("c", CAPTION)[0] == t2v_dense(CAPTION) and fuser.fallbacks == 4
    fuser.llm = FakeLLM(["a woman in red walks toward the camera in the rain"])
    assert fuser.enhance(["woman, rain"]) == ["A woman in red walks toward the camera in the rain."]
