"""Preference pairs (report section 3.4.1): regeneration maths, pixel distortions, pair labels and
sides, the discard rule, simulated human labels, and the stage's table and files."""

import os
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch

from infra.config_post import DISTORTION_LEVEL, MOTION_FAILURES
from models import distortions as dist
from models import regenerate as rg

CAPTION = "a man walks on a city street"


def moving_frames(count: int, height: int = 48, width: int = 80, step: int = 3) -> list[np.ndarray]:
    """A horizontal gradient with a bright square sliding right: real motion."""
    base = np.tile(np.linspace(30, 200, width)[None, :, None], (height, 1, 3))
    frames = []
    for i in range(count):
        f = base.copy()
        x = (5 + step * i) % (width - 12)
        f[16:28, x:x + 12] = 250
        frames.append(f.astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def components():
    from models.checkpoint import build_components

    return build_components("tiny", seed=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from models.checkpoint import init_checkpoint

    return init_checkpoint("tiny", str(tmp_path_factory.mktemp("ckpt") / "tiny"))


def _cond(components, guidance=5.0):
    from models.df_sampler import encode_prompts

    tok, enc = components["tokenizer"], components["text_encoder"]
    return rg.Conditioning(encode_prompts(tok, enc, [CAPTION], 32), encode_prompts(tok, enc, [""], 32), guidance)


class ExactFlow:
    """A stand-in DiT that knows the data x1: it returns diffusers' velocity toward the noise,
    (x_sigma - x1) / sigma, reading sigma from the timestep (1000 * sigma)."""

    config = SimpleNamespace(inject_sample_info=False)

    def __init__(self, x1):
        self.x1, self.timesteps = x1, []

    def __call__(self, hidden_states, timestep, encoder_hidden_states, fps, return_dict):
        self.timesteps.append(float(timestep[0]))
        sigma = timestep[0] / 1000
        return ((hidden_states - self.x1) / sigma,)


def test_euler_follows_diffusers_time_and_sign():
    x1, noise = torch.randn(1, 4, 3, 2, 2), torch.randn(1, 4, 3, 2, 2)
    model = ExactFlow(x1)
    cond = rg.Conditioning(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), 5.0)
    out = rg.denoise(model, noise, rg.euler_sigmas(1.0, 3), cond)
    torch.testing.assert_close(out, x1)  # integrating the exact velocity from pure noise lands on the data
    assert model.timesteps == pytest.approx([1000.0, 1000 * 2 / 3, 1000 / 3], abs=1e-3)
    half = rg.noise_to(x1, noise, 0.25)
    torch.testing.assert_close(half, 0.75 * x1 + 0.25 * noise)  # Eq. 1 with t = 1 - sigma


def test_v2v_with_vanishing_strength_returns_the_clip(components):
    from models.df_vae import decode, encode_frames

    frames = np.stack(moving_frames(9, 32, 64))
    clean = encode_frames(components["vae"], frames)
    cond = _cond(components)
    gen = torch.Generator().manual_seed(0)
    near = rg.regenerate("v2v", components["transformer"], clean, cond, 2, gen, strength=1e-4)
    far = rg.regenerate("v2v", components["transformer"], clean, cond, 2, torch.Generator().manual_seed(0), 0.9)
    assert (near - clean).abs().max() < 1e-2 < (far - clean).abs().mean()
    recon, regen = decode(components["vae"], clean), decode(components["vae"], near)
    assert regen.shape == (9, 32, 64, 3)
    assert np.abs(regen - recon).mean() < 1e-3  # the VAE round trip of the real clip, nearly exactly


def test_i2v_keeps_the_first_latent_frame_and_t2v_ignores_the_clip(components):
    clean = torch.randn(1, 16, 3, 4, 8)
    cond = _cond(components, guidance=1.0)
    i2v = rg.regenerate("i2v", components["transformer"], clean, cond, 2, torch.Generator().manual_seed(1))
    torch.testing.assert_close(i2v[:, :, :1], clean[:, :, :1])
    assert (i2v[:, :, 1:] - clean[:, :, 1:]).abs().mean() > 0.1
    t2v_a = rg.regenerate("t2v", components["transformer"], clean, cond, 2, torch.Generator().manual_seed(1))
    t2v_b = rg.regenerate("t2v", components["transformer"], clean * 0, cond, 2, torch.Generator().manual_seed(1))
    torch.testing.assert_close(t2v_a, t2v_b)  # from text alone: the clip's latent only sets the shape
    with pytest.raises(ValueError, match="kind"):
        rg.regenerate("x2v", components["transformer"], clean, cond, 2, torch.Generator())


def test_pixel_distortions_are_what_they_claim():
    frames = np.random.default_rng(0).random((9, 8, 8, 3)).astype(np.float32)
    stutter = dist.stutter(frames)
    assert stutter.shape == frames.shape
    for k in range(0, 8, 2):  # every other frame dropped, the kept one repeated
        assert np.array_equal(stutter[k], frames[k]) and np.array_equal(stutter[k + 1], frames[k])
    assert np.array_equal(dist.reverse(frames), frames[::-1])
    grey = np.full((9, 32, 32, 3), 0.5, np.float32)
    noisy = dist.add_noise(grey, 0.05, np.random.default_rng(0))
    assert abs(float((noisy - grey).std()) - 0.05) < 0.002 and abs(float((noisy - grey).mean())) < 0.002
    assert dist.mean_abs_difference(noisy, grey) == pytest.approx(0.05 * np.sqrt(2 / np.pi), rel=0.05)
    with pytest.raises(ValueError, match="kind"):
        dist.distort("blur", frames, 0.1, np.random.default_rng(0))


def test_pair_plan_puts_real_and_milder_first():
    kinds = ["v2v", "i2v", "t2v", "frame_rate", "noise", "reverse"]
    pairs = dist.auto_pairs(kinds)
    assert pairs[:6] == [("real", k) for k in kinds]
    for chosen, rejected in pairs:
        assert dist.level(chosen) < dist.level(rejected)
    assert ("v2v", "noise") not in pairs and ("noise", "v2v") not in pairs  # equal levels: no pair
    level = DISTORTION_LEVEL
    expected = len(kinds) + sum(level[x] != level[y] for i, x in enumerate(kinds) for y in kinds[i + 1:])
    assert len(pairs) == expected


def test_chosen_side_is_random_and_label_follows_it():
    from tasks.post.pairs import orient

    rng = np.random.default_rng(0)
    sides = [orient("real", "t2v", rng) for _ in range(200)]
    assert {s[2] for s in sides} == {"a", "b"} and 60 < sum(s[2] == "a" for s in sides) < 140
    for a, b, label in sides:
        assert (a if label == "a" else b) == "real"


def test_discard_rule():
    from tasks.post.pairs import difference_check

    a = np.zeros((3, 4, 4, 3), np.float32)
    assert difference_check(a, a + 0.02, 0.01) == {}
    out = difference_check(a, a + 0.005, 0.01)
    assert out["discarded"] and "0.0050 < min_difference 0.01" in out["discard_reason"]


def test_motion_oracle_prefers_real_motion():
    real = [dist.motion_stats(np.stack(moving_frames(9, step=s)) / 255.0) for s in (2, 3, 4)]
    oracle = dist.MotionOracle(real, tie_margin=0.25)
    natural = dist.motion_stats(np.stack(moving_frames(9, step=3)) / 255.0)
    frozen = dist.motion_stats(np.stack(moving_frames(9, step=0)) / 255.0)
    wild = dist.motion_stats(np.random.default_rng(0).random((9, 48, 80, 3)))
    assert oracle.judge(natural, frozen) == ("a", MOTION_FAILURES[1])  # insufficient motion
    assert oracle.judge(wild, natural)[0] == "b"
    assert oracle.judge(natural, natural) == ("tie", None)


def test_clip_similarity_takes_long_captions(tmp_path):
    from models.zero_shot import ZeroShotClassifier, build_tiny_clip

    clip = ZeroShotClassifier(build_tiny_clip(str(tmp_path / "clip")))
    frames = moving_frames(3)
    assert -1 <= clip.similarity(frames, CAPTION * 40) <= 1  # cut to the text tower's 77 positions
    assert clip.similarity(frames, CAPTION) != clip.similarity(frames, "a dog")


def test_plan_draws_view_members_and_human_prompts():
    import pandas as pd

    from infra.config import ConfigError
    from infra.config_post import PairsConfig
    from tasks.post.pairs import plan_items

    df = pd.DataFrame({"clip_id": list("abcde"), "caption_t2v": ["x a", "x b", "", "x d", "x e"],
                       "error": [None, None, None, "bad", None], "in_D_v": [True, True, True, True, False]})
    items = plan_items(df, PairsConfig(max_clips=5, human_prompts=1), "D_v", "simulated")
    assert sorted(i["clip_id"] for i in items if i["kind"] == "clip") == ["a", "b"]  # no caption, error, outsider
    assert [i["kind"] for i in items].count("prompt") == 1
    assert plan_items(df, PairsConfig(max_clips=1), "D_v", "off")[0]["kind"] == "clip"
    assert len(plan_items(df, PairsConfig(max_clips=1), "D_v", "off")) == 1
    with pytest.raises(ConfigError, match="in_D_w"):
        plan_items(df, PairsConfig(), "D_w", "off")


def test_worker_pending_human_pairs_and_error_rows(tmp_path, checkpoint):
    from infra.config_post import PairsConfig
    from models.zero_shot import build_tiny_clip
    from tasks.post.pairs import SCHEMA, PairsWorker

    cfg = PairsConfig(frames=9, human_samples_per_prompt=3, sample_steps=1, min_difference=0.0)
    worker = PairsWorker(checkpoint, cfg.model_dump(mode="json"), (32, 64), 32, build_tiny_clip(str(tmp_path / "clip")),
                         str(tmp_path / "tmp"), str(tmp_path / "final"))
    (out,) = worker({"kind": "prompt", "key": "p", "prompt": CAPTION, "seed": 3})
    assert len(out["rows"]) == 3 and set(SCHEMA.names) == set(out["rows"][0])
    for row in out["rows"]:  # labels come from the pairwise audit page
        assert row["label"] is None and row["label_source"] == "pending" and row["kind"] == "human"
        assert os.path.exists(str(tmp_path / "tmp") + row["a_uri"][len(str(tmp_path / "final")):])
    missing = {"clip_id": "gone", "clip_uri": str(tmp_path / "gone.mp4"), "fps": 24.0, "num_frames": 30,
               "caption_t2v": CAPTION}
    (out,) = worker({"kind": "clip", "key": "gone", "clip_id": "gone", "prompt": CAPTION, "row": missing, "seed": 1})
    assert len(out["rows"]) == 1 and out["rows"][0]["error"] and out["rows"][0]["source_clip_id"] == "gone"


def _checkpoint_stage(ctx):
    from infra import storage
    from infra.config import ClipsConfig
    from infra.stage import run_stage
    from models.checkpoint import init_checkpoint

    def body(work):
        init_checkpoint("tiny", storage.join(work.tmp_uri, "checkpoint"))
        return pa.Table.from_pylist([{"step": 0}])

    return run_stage(ctx, "sft-540p", ClipsConfig(), [], body)


def _dataset_stage(ctx, folder):
    from infra.config import ClipsConfig
    from infra.stage import run_stage
    from infra.video import write_video

    rows = []
    for name, count, step, member, error in [("walk", 30, 3, True, None), ("run", 30, 5, True, None),
                                             ("short", 5, 3, True, None), ("outsider", 30, 3, False, None),
                                             ("broken", 30, 3, True, "upstream")]:
        uri = os.path.join(folder, f"{name}.mp4")
        write_video(moving_frames(count, step=step), uri, 24)
        rows.append({"clip_id": name, "clip_uri": uri, "num_frames": count, "fps": 24.0, "width": 80, "height": 48,
                     "caption_t2v": f"{CAPTION} {name}", "error": error, "in_D_540p_sft": member})
    return run_stage(ctx, "D_540p_sft", ClipsConfig(), [], lambda work: pa.Table.from_pylist(rows))


@pytest.mark.slow
def test_stage_table_files_labels_and_provenance(make_cfg, tmp_path):
    from infra import manifest as mf
    from infra.session import open_run
    from infra.video import probe_video
    from tasks.post import pairs as stage

    cfg = make_cfg("post.pairs.resolution=256p", "post.pairs.frames=9", "post.pairs.max_clips=3",
                   "post.pairs.sample_steps=1", "post.pairs.noise_std=0.002", "post.pairs.human_prompts=1",
                   "post.pairs.human_samples_per_prompt=3", "post.human_pairs_mode=simulated")
    ctx = open_run(cfg, "pairs-a")
    checkpoint, dataset = _checkpoint_stage(ctx), _dataset_stage(ctx, str(tmp_path))
    published = stage.run(ctx, cfg.post.pairs, cfg.audit, dataset, checkpoint)
    table = mf.read_table(published)
    assert table.columns.tolist() == stage.SCHEMA.names
    errors = table[table["error"].notna()]
    assert errors["source_clip_id"].tolist() == ["short"] and "too short" in errors["error"].iloc[0]
    ok = table[table["error"].isna()]
    auto, human = ok[ok["kind"] == "auto"], ok[ok["kind"] == "human"]
    assert set(auto["source_clip_id"]) == {"walk", "run"}  # outsider: not in the view; broken: an error row
    assert len(auto) == 2 * len(dist.auto_pairs(cfg.post.pairs.distortions)) and len(human) == 3
    for row in auto.itertuples():
        better, worse = (row.a_level, row.b_level) if row.label == "a" else (row.b_level, row.a_level)
        assert better < worse and row.label_source == "auto" and -1 <= row.clip_similarity <= 1
        assert row.generator == os.path.join(checkpoint.uri, "checkpoint") and row.prompt.startswith(CAPTION)
    assert set(auto["label"]) == {"a", "b"}  # the chosen sample sits on both sides
    real_vs_noise = auto[auto[["a_desc", "b_desc"]].apply(set, axis=1) == {"real", "noise"}]
    assert real_vs_noise["discarded"].all() and real_vs_noise["discard_reason"].str.contains("min_difference").all()
    assert (human["label_source"] == "simulated").all() and set(human["label"]) <= {"a", "b", "tie"}
    assert (human["failure"].isna() == (human["label"] == "tie")).all()
    assert set(human["a_desc"]) | set(human["b_desc"]) == {"sample-0", "sample-1", "sample-2"}
    for uri in list(ok["a_uri"]) + list(ok["b_uri"]):
        assert uri.startswith(published.uri)
        probe = probe_video(uri)
        assert (probe.num_frames, probe.height, probe.width) == (9, 32, 64)
    stats = published.stats
    assert stats["checkpoint"].endswith("checkpoint") and stats["counts"]["kind"] == {"auto": len(auto), "human": 3}
    assert stats["discarded_share"] == pytest.approx(ok["discarded"].mean())
    assert stats["counts"]["distortion"]["t2v"] == 2 * sum("t2v" in p for p in dist.auto_pairs(cfg.post.pairs.distortions))
