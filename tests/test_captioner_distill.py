"""The captioner's distillation (report 3.2, SkyCaptioner-V1): supervised examples of the captioner's own
prompt, fine-tuning that learns the teacher's fields, and the stage on a caption table."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from infra.config_caption import CaptionerConfig
from models.caption_schema import StructuredCaption
from models.captioner_tune import FIELDS, IGNORE, agreement, field_values, fine_tune, supervised_example


def caption(category="human", shot="medium", yaw="0", emotion="neutral") -> StructuredCaption:
    subject = {"TYPES": {"type": category, "sub_type": "thing"}, "appearance": "red coat", "action": "walks",
               "expression": {"emotion": emotion, "intensity": "slight", "change": "steady"} if category == "human" else None,
               "position": "left", "is_main_subject": True}
    return StructuredCaption.model_validate({
        "subjects": [subject], "shot_type": shot, "shot_angle": "eye level", "shot_position": "front",
        "camera_motion": {"yaw": yaw, "speed": "static" if yaw == "0" else "slow"}, "environment": "street",
        "lighting": "day"})


def test_field_values_and_agreement_count_each_field():
    a, b = caption(shot="close-up", yaw="+", emotion="happy"), caption(category="animal", shot="long")
    assert field_values(a)["camera.yaw"] == "+" and field_values(b)["expression.emotion"] == "none"
    result = agreement([a, b, None], [a, caption(category="animal", shot="close-up"), a])
    assert set(result) == set(FIELDS)
    assert result["category"] == pytest.approx(2 / 3)  # the missing prediction disagrees
    assert result["shot_type"] == pytest.approx(1 / 3) and result["shot_angle"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="equal"):
        agreement([a], [a, b])


def test_split_is_fixed_by_the_clip_id_and_balance_cuts_the_head():
    from tasks.curate.captioner_distill import balanced, split_of, split_rows

    ids = [f"clip-{i}" for i in range(400)]
    held = [i for i in ids if split_of(i, 0.25) == "holdout"]
    assert 60 < len(held) < 140 and held == [i for i in ids if split_of(i, 0.25) == "holdout"]
    assert [r["split"] for r in split_rows([{"clip_id": "a"}, {"clip_id": "b"}], 0.01)] == ["holdout", "train"]
    assert sorted(r["split"] for r in split_rows([{"clip_id": i} for i in ids[:8]], 0.99)) == ["holdout"] * 7 + ["train"]
    with pytest.raises(ValueError, match="at least 2 captioned clips"):
        split_rows([{"clip_id": "a"}], 0.25)
    rows = [{"category": "human"}] * 9 + [{"category": "animal"}] * 2 + [{"category": "object"}]
    counts = [r["category"] for r in balanced(rows, None)]
    assert counts.count("human") == 4 and counts.count("animal") == 2 and counts.count("object") == 1  # mean = 4
    assert [r["category"] for r in balanced(rows, 1)] == ["human", "animal", "object"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the tiny model gains nothing from more, and the suite's other process shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory):
    from models.captioner import build_tiny_captioner

    return build_tiny_captioner(str(tmp_path_factory.mktemp("captioner") / "tiny"))


def _videos(n: int) -> list[tuple[np.ndarray, float]]:
    """Clips a tiny model can tell apart: each a flat colour of its own."""
    return [(np.full((8, 56, 84, 3), 40 + 60 * i, np.uint8), 2.0) for i in range(n)]


def test_fine_tuning_learns_the_teacher_fields_the_base_model_misses(tiny_captioner):
    from models.captioner import TransformersCaptioner

    cfg = CaptionerConfig()
    torch.manual_seed(0)
    student = TransformersCaptioner(tiny_captioner, cfg)
    teacher = [caption(shot="close-up", yaw="+", emotion="happy"), caption(shot="long"), caption(shot="medium", yaw="-")]
    videos = _videos(3)
    examples = [supervised_example(student.tokenizer, student.model.config.vision_config, f, fps, c.model_dump_json(),
                                   cfg.min_pixels, cfg.max_pixels) for (f, fps), c in zip(videos, teacher, strict=True)]
    first = examples[0]
    answer = first["labels"][first["labels"] != IGNORE]
    assert answer[-1] == student.tokenizer.convert_tokens_to_ids("<|im_end|>")  # the turn ends after the JSON
    assert student.tokenizer.decode(answer[:-1]) == teacher[0].model_dump_json()
    before = agreement([r.caption for r in student.caption_batch(videos)], teacher)
    losses = fine_tune(student.model, examples, lr=3e-3, epochs=40, batch=3, seed=0)
    after = agreement([r.caption for r in student.caption_batch(videos)], teacher)
    assert losses[-1] < losses[0] / 5
    assert np.mean(list(after.values())) > np.mean(list(before.values())) + 0.3
    assert after["shot_angle"] == after["category"] == 1.0  # what every teacher caption says, learnt


@pytest.mark.slow
def test_stage_distils_measures_and_registers(make_cfg, tmp_path, tiny_captioner):
    import pyarrow as pa

    from infra import manifest as mf
    from infra.session import open_run
    from infra.stage import run_stage
    from infra.video import write_video
    from models.captioner import TransformersCaptioner
    from tasks.curate import captioner_distill as stage

    cfg = make_cfg(f"stages.caption.captioner.model_path={tiny_captioner}")
    ctx = open_run(cfg, "distill")
    kinds = [("human", "close-up", "+"), ("animal", "long", "0"), ("vehicle", "medium", "-"), ("human", "full", "0")]
    rows = []
    for i in range(12):
        category, shot, yaw = kinds[i % 4]
        uri = str(tmp_path / f"c{i}.mp4")
        write_video(np.full((12, 36, 64, 3), 30 + 50 * (i % 4), np.uint8), uri, 6.0)
        rows.append({"clip_id": f"c{i}", "clip_uri": uri, "num_frames": 12, "fps": 6.0, "error": None, "category": category,
                     "caption_json": caption(category, shot, yaw).model_dump_json()})
    rows.append({**rows[0], "clip_id": "broken", "error": "decode failed", "caption_json": None})
    rows.append({**rows[1], "clip_id": "gone", "clip_uri": str(tmp_path / "gone.mp4")})  # captioned, file missing
    captions = run_stage(ctx, "caption", cfg.stages.caption, [], lambda work: pa.Table.from_pylist(rows))
    distill = cfg.stages.captioner_distill.model_copy(update={"holdout": 0.34, "epochs": 25, "torch_threads": 1})
    published = stage.run(ctx, distill, cfg.stages.caption, captions)

    table = mf.read_table(published)
    assert "broken" not in set(table["clip_id"]) and set(table["split"]) == {"train", "holdout", "unused"}
    gone = table.set_index("clip_id").loc["gone"]
    assert gone["split"] == "unused" and "gone.mp4" in gone["error"]  # a row with its error; the stage goes on
    held = table[table["split"] == "holdout"]
    assert held["distilled"].notna().all() and table[table["split"] == "train"]["distilled"].isna().all()
    evaluation = json.loads(open(os.path.join(published.uri, stage.EVALUATION)).read())
    assert evaluation["holdout_clips"] == len(held) and evaluation["valid_after"] == 1.0
    assert evaluation["mean_after"] > evaluation["mean_before"], evaluation
    assert evaluation["loss"][-1] < evaluation["loss"][0]
    folder = os.path.join(published.uri, "captioner")
    reloaded = TransformersCaptioner(folder, cfg.stages.caption.captioner)  # the caption stage's loader reads it
    assert reloaded.caption_batch(_videos(1))[0].caption is not None
    versions = ctx.tracker.client.search_model_versions(f"name='{cfg.tracking.experiment}-tiny-captioner'")
    assert any(v.source.endswith("captioner") or "captioner" in v.source for v in versions)
    again = stage.run(ctx, distill, cfg.stages.caption, captions)  # published: skipped, same result
    assert again.fingerprint == published.fingerprint
