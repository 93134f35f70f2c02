"""Captioner (issue 4): the schema walker, the Qwen2-VL video layout, the tiny random Qwen2.5-VL
whose constrained output always validates, retries -> error, sub-expert overrides, the worker."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from infra.config_caption import CaptionConfig, CaptionerConfig
from models.caption_schema import Expression, StructuredCaption, caption_json_schema
from models.captioner import (
    TransformersCaptioner,
    build_tiny_captioner,
    fit_size,
    sample_indices,
    video_inputs,
)
from models.json_constrained import SchemaWalker, TokenConstraint

torch.set_num_threads(1)
SCHEMA = caption_json_schema()


def _char_constraint(walker: SchemaWalker) -> TokenConstraint:
    texts = [chr(c) for c in range(32, 127)] + ['{"', '":"', '","', "true", "null", '"}', "close-up", "},{", ' "']
    return TokenConstraint(walker, texts + [None], eos_ids=[len(texts)], vocab_size=len(texts) + 1)


def test_random_walks_through_the_walker_always_validate():
    walker = SchemaWalker(SCHEMA, string_cap=20)
    constraint, rng = _char_constraint(walker), random.Random(0)
    for _ in range(40):
        state, out = walker.start(), []
        for _ in range(walker.max_chars() + 1):  # the bound must suffice
            token = rng.choice(constraint.allowed(state).tolist())
            if token in constraint.eos_ids:
                break
            out.append(token)
            state = constraint.step(state, token)
        else:
            pytest.fail("walk did not finish within max_chars() + 1 tokens")
        caption = StructuredCaption.model_validate_json(constraint.decode(out))
        assert all(len(s.appearance) <= 20 for s in caption.subjects)


def test_allowed_tokens_equal_a_brute_force_check_of_every_token():
    walker = SchemaWalker(SCHEMA, string_cap=6)
    constraint, rng = _char_constraint(walker), random.Random(3)
    state = walker.start()
    while state:
        brute = {t for t, text in enumerate(constraint.texts) if text and walker.feed(state, text) is not None}
        assert set(constraint.allowed(state).tolist()) == brute
        state = constraint.step(state, rng.choice(sorted(brute)))


def test_walker_rejects_what_the_schema_forbids():
    walker = SchemaWalker(SCHEMA)
    assert walker.feed(walker.start(), '{"subjects":[') is not None
    assert walker.feed(walker.start(), '{"subject":') is None  # wrong key
    assert walker.feed(walker.start(), '{ "subjects"') is None  # no free whitespace
    assert walker.feed(walker.start(), '{"subjects":[]') is None  # minItems 1
    head = '{"subjects":[{"TYPES":{"type":"human","sub_type":"'
    assert walker.feed(walker.start(), head + "x" * 40 + '"') is not None
    assert walker.feed(walker.start(), head + "x" * 41) is None  # maxLength 40
    assert walker.feed(walker.start(), head + 'a\\"') is None  # no escapes
    assert walker.feed(walker.start(), '{"subjects":[{"TYPES":{"type":"robot"') is None  # enum
    constraint = _char_constraint(walker)
    assert constraint.eos_ids[0] not in constraint.allowed(walker.start()).tolist()
    assert constraint.allowed(()).tolist() == constraint.eos_ids  # complete: only EOS


def test_sampling_and_sizes():
    idx = sample_indices(240, 24.0, 2.0, 32)
    assert len(idx) == 20 and np.all(np.diff(idx) == 12)
    assert len(sample_indices(2400, 24.0, 2.0, 32)) == 32
    assert len(sample_indices(3, 24.0, 2.0, 32)) == 2
    h, w = fit_size(180, 320, 28, 28 * 28 * 4, 28 * 28 * 8)
    assert h % 28 == 0 and w % 28 == 0 and 28 * 28 * 4 <= h * w <= 28 * 28 * 8 and w > h


def test_video_patches_follow_the_qwen2_vl_layout():
    class Vision:
        patch_size, spatial_merge_size, temporal_patch_size = 14, 2, 2

    t, h, w = 4, 56, 84  # no resize: already multiples of 28
    frames = np.random.default_rng(0).integers(0, 255, (t, h, w, 3), dtype=np.uint8)
    pixels, grid = video_inputs(frames, Vision, h * w, h * w)
    assert grid.tolist() == [[2, 4, 6]] and pixels.shape == (2 * 4 * 6, 3 * 2 * 14 * 14)
    norm = (frames.astype(np.float32) / 255 - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array(
        [0.26862954, 0.26130258, 0.27577711])
    row = 0
    for gt in range(2):  # time groups, then 2x2 merge windows in raster order, then patches in a window
        for by in range(2):
            for bx in range(3):
                for my in range(2):
                    for mx in range(2):
                        y, x = (by * 2 + my) * 14, (bx * 2 + mx) * 14
                        patch = norm[gt * 2:gt * 2 + 2, y:y + 14, x:x + 14].transpose(3, 0, 1, 2).reshape(-1)
                        np.testing.assert_allclose(pixels[row].numpy(), patch, atol=1e-5)
                        row += 1


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory):
    folder = build_tiny_captioner(str(tmp_path_factory.mktemp("models") / "captioner"))
    return TransformersCaptioner(folder, CaptionerConfig(string_cap=24))


def test_tiny_random_captioner_always_emits_a_valid_caption(tiny_captioner):
    rng = np.random.default_rng(1)
    for _ in range(4):
        frames = rng.integers(0, 255, (int(rng.integers(2, 9)), 90, 160, 3), dtype=np.uint8)
        for attempt in (0, 1):  # greedy, then seeded sampling
            caption = StructuredCaption.model_validate_json(tiny_captioner.generate(frames, 2.0, attempt))
            assert caption.category in {"human", "animal", "vehicle", "scenery", "architecture", "object"}
        result = tiny_captioner.caption(frames, 2.0)
        assert result.error is None and result.attempts == 1


def test_invalid_output_is_retried_then_reported(tiny_captioner, monkeypatch):
    frames = np.zeros((4, 90, 160, 3), np.uint8)
    answers = iter(['{"subjects": []}', tiny_captioner.generate(frames, 2.0, 0)])
    monkeypatch.setattr(tiny_captioner, "generate", lambda *a: next(answers))
    assert tiny_captioner.caption(frames, 2.0).attempts == 2  # first invalid, second valid

    def broken(*args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tiny_captioner, "generate", broken)
    result = tiny_captioner.caption(frames, 2.0)
    assert result.caption is None and result.attempts == 3 and "out of memory" in result.error


def _caption(**over) -> StructuredCaption:
    base = {"subjects": [{"TYPES": {"type": "animal", "sub_type": "dog"}, "appearance": "brown", "action": "runs",
                          "expression": {"emotion": "happy", "intensity": "slight", "change": "steady"},
                          "position": "left", "is_main_subject": False},
                         {"TYPES": {"type": "human", "sub_type": "woman"}, "appearance": "red coat", "action": "walks",
                          "expression": None, "position": "centre", "is_main_subject": True}],
            "shot_type": "long", "shot_angle": "eye level", "shot_position": "front", "camera_motion": {},
            "environment": "street", "lighting": "soft"}
    return StructuredCaption.model_validate({**base, **over})


def test_sub_experts_override_their_fields():
    from tasks.curate.caption import apply_experts

    face = Expression(emotion="sad", intensity="strong", change="steady")
    out = apply_experts(_caption(), {"shot_type": "close-up", "shot_angle": "low", "shot_position": "side"},
                        {"yaw": "+", "tx": "0", "ty": "0", "tz": "0", "roll": "0", "pitch": "0", "speed": "slow",
                         "handheld": True, "abrupt_change": False}, face)
    assert (out.shot_type, out.shot_angle, out.shot_position) == ("close-up", "low", "side")
    assert out.camera_motion.yaw == "+" and out.camera_motion.handheld
    assert out.subjects[0].expression is None  # a dog has no facial expression field
    assert out.subjects[1].expression == face and out.category == "human"
    same = apply_experts(_caption(), None, None, None)
    assert same.shot_type == "long" and same.subjects[1].expression is None


def test_worker_captions_carries_errors_and_survives_a_bad_clip(tmp_path):
    from infra.video import write_video
    from tasks.curate.caption import CAPTION_FIELDS, CaptionWorker, resolve_models
    from tasks.curate.clips import CLIPS_SCHEMA

    rng = np.random.default_rng(0)
    path = str(tmp_path / "clip.mp4")
    write_video(rng.integers(0, 255, (30, 90, 160, 3), dtype=np.uint8), path, 12.0)
    (tmp_path / "broken.mp4").write_text("not a video")
    base = {"source_id": "s", "source_uri": path, "shot_id": "s:0", "start_frame": 0, "end_frame": 30,
            "fps": 12.0, "width": 160, "height": 90, "num_frames": 30}
    rows = [{**base, "clip_id": "good", "clip_uri": path, "error": None},
            {**base, "clip_id": "carried", "clip_uri": None, "error": "too short"},
            {**base, "clip_id": "broken", "clip_uri": str(tmp_path / "broken.mp4"), "error": None}]
    cfg = CaptionConfig(cache_dir=str(tmp_path / "models"), captioner={"string_cap": 16})
    worker = CaptionWorker(cfg.model_dump(), *resolve_models(cfg))
    out = [(r["row"], r["timing"]) for r in worker({"rows": rows, "names": CLIPS_SCHEMA.names})]
    good, carried, broken = (o[0] for o in out)
    assert set(good) == set(CLIPS_SCHEMA.names) | {f.name for f in CAPTION_FIELDS}
    caption = StructuredCaption.model_validate_json(good["caption_json"])
    assert good["error"] is None and good["category"] == caption.category and good["caption_t2v"]
    assert out[0][1]["attempts"] == 1
    assert carried["error"] == "too short" and carried["caption_json"] is None
    assert broken["caption_json"] is None and "decode/sub-experts failed" in broken["error"]


def test_the_fusion_llm_gets_a_pool_of_its_own(tmp_path, monkeypatch):
    """fuse.backend=vllm: the captioner's actors build no fusion engine; each fusion actor builds one. vLLM cannot
    run here (no GPU, not installed): a stand-in `vllm` module records the engines and answers every chat."""
    import sys
    import types

    from infra.video import write_video
    from tasks.curate.caption import CaptionWorker, FuseWorker, resolve_models
    from tasks.curate.clips import CLIPS_SCHEMA

    path = str(tmp_path / "clip.mp4")
    write_video(np.random.default_rng(0).integers(0, 255, (30, 90, 160, 3), dtype=np.uint8), path, 12.0)
    row = {"source_id": "s", "source_uri": path, "shot_id": "s:0", "start_frame": 0, "end_frame": 30, "fps": 12.0,
           "width": 160, "height": 90, "num_frames": 30, "clip_id": "c0", "clip_uri": path, "error": None}
    cfg = CaptionConfig(cache_dir=str(tmp_path / "models"), captioner={"string_cap": 16},
                        fuse={"backend": "vllm", "llm_path": "/models/fusion-llm"})
    engines = []

    class LLM:
        def __init__(self, model, seed):
            engines.append(model)

        def chat(self, chats, params, use_tqdm=False):
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text="a fused caption")]) for _ in chats]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    captioner = CaptionWorker(cfg.model_dump(), *resolve_models(cfg))
    assert captioner.fuser is None and engines == []
    captioned = captioner({"rows": [row], "names": CLIPS_SCHEMA.names})[0]["row"]
    assert captioned["caption_json"] and captioned["caption_t2v"] is None  # left for the fusion pool
    fused = FuseWorker(cfg.model_dump())([captioned])
    assert engines == ["/models/fusion-llm"]  # one engine, in the fusion actor
    assert fused[0]["row"]["caption_t2v"] == "A fused caption." and fused[0]["row"]["caption_i2v"] == "A fused caption."
    assert fused[0]["row"]["caption_json"] == captioned["caption_json"] and fused[0]["fuse"] >= 0


@pytest.mark.slow
def test_caption_stage_adds_columns_through_ray(make_cfg, tmp_path):
    import pyarrow as pa

    from infra import manifest as mf
    from infra.config import ClipsConfig
    from infra.session import open_run
    from infra.stage import run_stage
    from infra.video import write_video
    from tasks.curate import caption as stage
    from tasks.curate.clips import CLIPS_SCHEMA

    path = str(tmp_path / "clip.mp4")
    write_video(np.random.default_rng(0).integers(0, 255, (24, 90, 160, 3), dtype=np.uint8), path, 12.0)
    base = {"source_id": "s", "source_uri": path, "shot_id": "s:0", "start_frame": 0, "end_frame": 24,
            "fps": 12.0, "width": 160, "height": 90, "num_frames": 24}
    rows = [{**base, "clip_id": f"c{i}", "clip_uri": path, "error": None} for i in range(3)]
    rows.append({**base, "clip_id": "bad", "clip_uri": None, "error": "too short"})
    ctx = open_run(make_cfg(), "caption-test")
    clips = run_stage(ctx, "clips", ClipsConfig(), [], lambda work: pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA))
    cfg = CaptionConfig(resources={"actors": 1}, cache_dir=str(tmp_path / "models"), captioner={"batch_size": 2})
    manifest = stage.run(ctx, cfg, clips)
    with open(manifest.data_uri.removeprefix("file://"), "rb") as fh:
        import pyarrow.parquet as pq

        table = pq.read_table(fh)
    assert table.schema.names == CLIPS_SCHEMA.names + ["caption_json", "caption_t2v", "caption_i2v", "category"]
    out = mf.read_table(manifest).set_index("clip_id")
    assert out.loc[["c0", "c1", "c2"], "caption_json"].map(lambda j: bool(StructuredCaption.model_validate_json(j))).all()
    assert out.loc["bad", "error"] == "too short" and out.loc["bad", "caption_json"] is None
    assert manifest.stats["validity_rate"] == 1.0 and sum(manifest.stats["categories"].values()) == 3
    assert json.loads(json.dumps(manifest.stats))  # plain JSON in _SUCCESS.json
