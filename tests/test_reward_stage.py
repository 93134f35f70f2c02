"""Stage ``reward`` (report section 3.4.1): pairs split by source clip (no leakage), unusable pairs left out,
a short BTT run beats chance on held-out pairs, and the published model folder loads, scores and is
registered in MLflow."""

from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np
import pyarrow as pa
import pytest
import torch

from infra import manifest as mf
from infra.stage import StageContext
from infra.tracking import Tracker
from infra.video import write_video
from tasks.post import reward

FRAMES, SIZE = 9, 56


@pytest.fixture
def ctx(make_cfg, tmp_path):
    cfg = make_cfg("audit.mode=off")  # the pending human pair stays unlabelled: no audit page to wait on
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "test", artifact_root=f"file://{tmp_path}/art")
    run_uri = str(tmp_path / "runs" / "r1")
    os.makedirs(run_uri)
    return StageContext("r1", run_uri, cfg, tracker, tracker.start_parent("r1", {}, {}), "abc")


def real_clip(rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8: a blocky random texture panning 6-10 pixels per frame."""
    texture = (rng.random((SIZE // 4, SIZE // 4, 3)) * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    speed = int(rng.integers(6, 11))
    return np.stack([np.roll(texture, t * speed, axis=1) for t in range(FRAMES)])


def distorted(clip: np.ndarray, desc: str, rng: np.random.Generator) -> np.ndarray:
    if desc == "noise":  # strong pixel noise
        return np.clip(clip + rng.normal(0, 60, clip.shape), 0, 255).astype(np.uint8)
    frozen = cv2.GaussianBlur(clip[0], (0, 0), 3)  # "t2v" stand-in: no motion, no detail
    return np.repeat(frozen[None], len(clip), axis=0)


def row(**values) -> dict:
    base = {"pair_id": None, "kind": "auto", "prompt": None, "source_clip_id": None, "a_uri": None, "b_uri": None,
            "a_desc": None, "b_desc": None, "a_level": None, "b_level": None, "label": None, "label_source": "auto",
            "failure": None, "clip_similarity": None, "generator": None, "seed": 0, "discarded": False,
            "discard_reason": None, "error": None}
    return {**base, **values}


def pairs_manifest(folder: str, clips: int, seed: int = 0) -> mf.Manifest:
    """A published pairs manifest: per clip, real > noise > t2v (sides shuffled), plus one discarded, one
    unlabelled and one error pair that the stage must leave out."""
    rng, rows = np.random.default_rng(seed), []
    level = {"real": 0, "noise": 1, "t2v": 3}
    for c in range(clips):
        real = real_clip(rng)
        uris = {}
        for desc in level:
            uris[desc] = os.path.join(folder, f"clip{c}", f"{desc}.mp4")
            write_video(real if desc == "real" else distorted(real, desc, rng), uris[desc], 24)
        for better, worse in (("real", "noise"), ("real", "t2v"), ("noise", "t2v")):
            a, b = (better, worse) if rng.random() < 0.5 else (worse, better)
            rows.append(row(pair_id=f"c{c}-{a}-{b}", source_clip_id=f"clip{c}", a_uri=uris[a], b_uri=uris[b],
                            a_desc=a, b_desc=b, a_level=level[a], b_level=level[b], label="a" if a == better else "b"))
    missing = os.path.join(folder, "missing.mp4")  # never decoded: every one of these rows is left out
    rows += [row(pair_id="discarded", source_clip_id="clip0", a_uri=missing, b_uri=missing, label="a",
                 discarded=True, discard_reason="too similar"),
             row(pair_id="pending", kind="human", prompt="a cat", a_uri=missing, b_uri=missing, a_desc="sample-0",
                 b_desc="sample-1", label=None, label_source="pending"),
             row(pair_id="broken", source_clip_id="clip1", a_uri=missing, b_uri=missing, label="b", error="decode")]
    out = os.path.join(folder, "pairs")
    return mf.publish(pa.Table.from_pylist(rows), out + ".tmp", out, stage="pairs", config_hash="t", inputs=[],
                      code_version="t", started=time.time())


def test_unusable_pairs_are_excluded_with_a_reason():
    assert reward.excluded_by(row(label="a")) is None
    assert reward.excluded_by(row(label="tie", kind="human", label_source="human")) is None
    assert reward.excluded_by(row(label="a", error="unreadable")) == "error"
    assert reward.excluded_by(row(label="a", discarded=True)) == "discarded"
    assert reward.excluded_by(row(label=None)) == "unlabelled"
    assert reward.excluded_by(row(label="a", label_source="pending")) == "unlabelled"


def test_split_keeps_every_clip_and_prompt_on_one_side():
    rows = [row(source_clip_id=f"clip{i % 20}", a_desc="real", b_desc="noise") for i in range(120)]
    rows += [row(kind="human", prompt=f"prompt {i % 6}", source_clip_id=f"clip{i}") for i in range(30)]
    keys = [reward.split_key(r) for r in rows]
    assert {k.split(":")[0] for k in keys} == {"clip", "prompt"}  # human pairs go by prompt, not by clip
    held = reward.holdout_keys(keys, 0.25, seed=0)
    assert held == reward.holdout_keys(list(reversed(keys)), 0.25, seed=0)  # seeded, order-free
    assert len(held) == round(0.25 * 26)
    train_clips = {r["source_clip_id"] for r, k in zip(rows, keys, strict=True) if k not in held and r["kind"] == "auto"}
    held_clips = {r["source_clip_id"] for r, k in zip(rows, keys, strict=True) if k in held and r["kind"] == "auto"}
    assert train_clips and held_clips and not train_clips & held_clips
    assert reward.holdout_keys(["clip:a", "clip:b"], 0.9, seed=0) in ({"clip:a"}, {"clip:b"})  # one left to train
    with pytest.raises(ValueError, match="need 2"):
        reward.holdout_keys(["clip:a"] * 3, 0.25, seed=0)
    assert reward.distortion(row(a_desc="t2v", b_desc="real")) == "t2v"
    assert reward.distortion(row(a_desc="t2v", b_desc="v2v")) == "t2v|v2v"


def test_frames_are_sampled_in_consecutive_pairs_so_stutter_shows(tmp_path):
    from models.distortions import stutter

    assert list(reward.sample_indices(17, 8)) == [0, 1, 5, 6, 10, 11, 15, 16]  # 4 pairs spread over the clip
    assert list(reward.sample_indices(17, 5)) == [0, 1, 15, 16, 16]  # odd: the last frame closes it
    for n, k in ((9, 4), (17, 8), (33, 16), (2, 2)):
        idx = reward.sample_indices(n, k)
        assert len(idx) == k and idx.min() == 0 and idx.max() == n - 1
        assert (idx[1::2] - idx[0::2] == 1).all()  # each pair is two adjacent frames
    # A moving clip and its stutter (every other frame held), decoded through the cache: some sampled
    # pair of the stutter repeats a frame, while every sampled pair of the real clip shows motion.
    clip = real_clip(np.random.default_rng(0))
    write_video(clip, str(tmp_path / "real.mp4"), 24)
    write_video(stutter(clip), str(tmp_path / "stutter.mp4"), 24)
    cache = reward.FrameCache(8)
    real, held = cache[str(tmp_path / "real.mp4")], cache[str(tmp_path / "stutter.mp4")]
    step = lambda frames: np.abs(frames[1::2].astype(int) - frames[0::2].astype(int)).mean(axis=(1, 2, 3))  # noqa: E731
    assert (step(real) > 10).all()
    assert (step(held) < 3).any() and (step(held) > 10).any()


@pytest.mark.slow
def test_stage_trains_beats_chance_and_publishes_a_loadable_model(ctx, tmp_path):
    pairs = pairs_manifest(str(tmp_path / "pairs_videos"), clips=12)
    cfg = ctx.cfg.post.reward.model_copy(update={"steps": 30, "lr": 3e-3, "batch_size": 6, "holdout": 0.34})
    out = reward.run(ctx, cfg, pairs)
    table = mf.read_table(out)
    assert len(table) == pairs.row_count and out.error_count == 1  # every row carried, the error row too
    excluded = table[table["split"] == "excluded"].set_index("pair_id")["excluded_by"].to_dict()
    assert excluded == {"discarded": "discarded", "pending": "unlabelled", "broken": "error"}
    train_keys = set(table.loc[table["split"] == "train", "split_key"])
    held_keys = set(table.loc[table["split"] == "holdout", "split_key"])
    assert len(held_keys) == 4 and len(train_keys) == 8 and not train_keys & held_keys

    with open(os.path.join(out.uri, reward.EVALUATION), encoding="utf-8") as fh:
        evaluation = json.load(fh)
    held = evaluation["holdout"]
    assert held["num_pairs"] == 12 and set(held["per_distortion"]) == {"noise", "t2v", "noise|t2v"}
    assert held["accuracy_excl_ties"] > 0.75, evaluation  # chance is 0.5
    assert evaluation["final_loss"] < evaluation["first_loss"]

    model = reward.load_reward_model(out)
    assert out.stats["reward_model"] == reward.reward_model_dir(out)
    first = table[table["split"] == "holdout"].iloc[0]
    cache = reward.FrameCache(cfg.frames)
    scores = model.score([cache[first["a_uri"]], cache[first["b_uri"]]])
    assert torch.allclose(scores, torch.tensor([first["score_a"], first["score_b"]], dtype=torch.float32), atol=1e-4)

    client = ctx.tracker.client
    version = client.get_model_version_by_alias(f"{ctx.cfg.tracking.experiment}-tiny-reward", "reward")
    assert version.source == reward.reward_model_dir(out)
    losses = client.get_metric_history(version.run_id, "loss")
    assert sorted(m.step for m in losses) == list(range(30))
    metrics = client.get_run(version.run_id).data.metrics
    assert metrics["holdout_accuracy_excl_ties"] == pytest.approx(held["accuracy_excl_ties"])
    assert reward.run(ctx, cfg, pairs).fingerprint == out.fingerprint  # resumed, not retrained


def test_augmentation_flips_and_crops_both_videos_of_a_pair_alike():
    rng = np.random.default_rng(0)
    a = (rng.random((4, 40, 60, 3)) * 255).astype(np.uint8)
    b = 255 - a
    for seed in range(8):
        out_a, out_b = reward.augment_pair(a, b, np.random.default_rng(seed))
        assert out_a.shape == out_b.shape and out_a.shape[1] >= 32 and out_a.shape[2] >= 48
        assert np.array_equal(out_b, 255 - out_a)  # one transformation for both: the pair's relation survives
