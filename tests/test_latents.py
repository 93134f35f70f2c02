"""Latent cache: buckets, FPS normalisation, encoders equal to diffusers' conventions, reuse, errors."""

import os

import numpy as np
import pytest
import torch

from infra.config_train import LatentsConfig, ResolutionConfig
from models import latent_encode as le

RES = ResolutionConfig(height=32, video_frames=[9, 17])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from models.checkpoint import init_checkpoint

    return init_checkpoint("tiny", str(tmp_path_factory.mktemp("ckpt") / "tiny"))


@pytest.fixture(scope="module")
def pipe(checkpoint):
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    return SkyReelsV2DiffusionForcingPipeline.from_pretrained(checkpoint)


def test_fps_normalise_picks_largest_rate_not_above():
    assert [le.fps_normalise(f) for f in (60, 30, 29.97, 25, 24, 23.976, 20, 16, 12, 8)] == \
        [24, 24, 24, 24, 24, 16, 16, 16, 16, 16]


def test_resample_strides_down_and_repeats_up():
    assert le.resample_indices(40, 30.0, 5) == [0, 1, 2, 3, 5]  # 30 -> 24: every 1.25 source frames
    assert le.resample_indices(40, 30.0, 3, offset=4) == [5, 6, 7]
    assert le.resample_indices(10, 8.0, 4) == [0, 0, 1, 1]  # 8 -> 16: each frame twice
    assert le.resampled_count(20, 30.0, 24) == 16 and le.resampled_count(9, 24.0, 24) == 9


def test_bucket_nearest_aspect_and_longest_duration_after_fps():
    assert RES.size(16 / 9) == (32, 64)
    assert le.bucket_for(1920, 1080, 24, 30.0, RES) == (16 / 9, 32, 64, 17)  # 24 -> 20 frames at 24 fps
    assert le.bucket_for(1920, 1080, 20, 30.0, RES)[3] == 9  # 16 frames at 24 fps: 17 does not fit
    assert le.bucket_for(1920, 1080, 10, 30.0, RES) is None  # 8 frames: fills no bin
    assert le.bucket_for(1920, 1080, 9, 8.0, RES)[3] == 17  # 8 fps -> 16 fps doubles: 18 frames
    assert le.bucket_for(720, 1280, 17, 24.0, RES)[0] == 9 / 16
    assert le.bucket_for(640, 480, 17, 24.0, RES)[0] == 4 / 3
    assert le.bucket_for(300, 200, 17, 24.0, RES)[0] == 4 / 3  # log distance: 1.5 is nearer 4:3 than 16:9
    assert le.bucket_for(500, 480, 17, 24.0, RES)[:3] == (1.0, *RES.size(1.0))
    assert le.bucket_name(le.latent_frames(17), 16 / 9, 32, 64) == "f5-ar1.78-32x64"


def test_text_embeddings_equal_pipeline_encode_prompt(pipe):
    texts = ["a man walks  on a city street at night, slow pan", "", "golden sun &amp; sea", "x" * 300]
    with torch.no_grad():  # as the pipelines run it (their __call__ is no_grad)
        ref, _ = pipe.encode_prompt(prompt=texts, do_classifier_free_guidance=False, max_sequence_length=64,
                                    device="cpu")
    ours = le.encode_text(pipe.tokenizer, pipe.text_encoder, texts, 64)
    masks = pipe.tokenizer([le.clean_prompt(t) for t in texts], max_length=64, truncation=True).attention_mask
    assert [e.shape[0] for e in ours] == [len(m) for m in masks] and ours[3].shape[0] == 64  # cut to text_len
    for emb, padded in zip(ours, ref, strict=True):
        assert emb.dtype == torch.float32
        torch.testing.assert_close(emb, padded[: len(emb)], atol=1e-6, rtol=0)
        assert not padded[len(emb):].any()  # the rest is the pipeline's zero padding


def test_latent_round_trip_matches_pipeline_decode(pipe):
    vae = pipe.vae
    frames = np.random.default_rng(0).integers(0, 255, (9, 40, 70, 3), dtype=np.uint8)
    latent = le.encode_video(vae, frames, (32, 64))
    assert latent.shape == (16, 3, 4, 8) and latent.dtype == torch.float32
    pixels = le.resize_center_crop(frames, 32, 64)
    with torch.no_grad():
        raw = vae.encode((pixels / 127.5 - 1).permute(1, 0, 2, 3)[None]).latent_dist.mode()
        # what SkyReelsV2Pipeline.__call__ does before decoding
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1)
        denorm = latent[None] / inv_std + mean
        torch.testing.assert_close(denorm, raw, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(vae.decode(denorm).sample, vae.decode(raw).sample, atol=1e-4, rtol=1e-4)


def test_resize_center_crop_keeps_the_middle():
    frame = np.zeros((1, 40, 100, 3), np.uint8)
    frame[:, :, 40:60] = 255  # a bright band in the centre survives a 1:1 crop of a wide frame
    out = le.resize_center_crop(frame, 16, 16)
    assert out.shape == (1, 3, 16, 16)
    assert out[0, :, :, 8].min() > 200 and out[0, :, :, 0].max() < 10


def test_encoder_fingerprint_ignores_the_transformer(checkpoint, tmp_path):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(checkpoint, copy)
    base = le.encoder_fingerprint(checkpoint)
    assert le.encoder_fingerprint(copy) == base  # content, not path
    with open(os.path.join(copy, "transformer", "extra.bin"), "wb") as fh:
        fh.write(b"trained DiT")
    assert le.encoder_fingerprint(copy) == base
    with open(os.path.join(copy, "vae", "config.json"), "a") as fh:
        fh.write(" ")
    assert le.encoder_fingerprint(copy) != base


def test_cache_root_defaults_beside_the_runs():
    assert LatentsConfig(cache_dir="/x/c").cache_dir == "/x/c"
    from tasks.train.lib.latent_cache import cache_root

    assert cache_root(LatentsConfig(), "/data/runs") == "/data/latent-cache"
    assert cache_root(LatentsConfig(), "s3://bucket/team/runs") == "s3://bucket/team/latent-cache"
    assert cache_root(LatentsConfig(), "s3://bucket") == "s3://bucket/latent-cache"


# --- the stage through Ray ------------------------------------------------------------------------


def _dataset(ctx, tmp_path):
    """A hand-built D_test view: good clips (one with a crop box), missing, corrupt, too short, not a member."""
    import pyarrow as pa

    from infra.config import ClipsConfig
    from infra.stage import run_stage
    from infra.video import write_video

    rng = np.random.default_rng(0)

    def clip(name, n, w, h, fps):
        path = str(tmp_path / f"{name}.mp4")
        write_video(rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8), path, fps)
        return path

    def row(cid, uri, n, w, h, fps, member=True, crop=None, caption="a man walks"):
        return {"clip_id": cid, "clip_uri": uri, "num_frames": n, "width": w, "height": h, "fps": fps,
                "error": None, "caption_t2v": caption, "in_D_test": member, "crop_box": crop}

    corrupt = str(tmp_path / "corrupt.mp4")
    with open(clip("corrupt-src", 20, 64, 36, 24.0), "rb") as fh:
        data = fh.read()
    with open(corrupt, "wb") as fh:
        fh.write(data[: len(data) // 3])
    rows = [
        row("wide", clip("wide", 20, 64, 36, 24.0), 20, 64, 36, 24.0),
        row("cropped", clip("cropped", 24, 64, 48, 30.0), 24, 64, 48, 30.0, crop=[16, 0, 32, 48], caption=None),
        row("missing", str(tmp_path / "nope.mp4"), 20, 64, 36, 24.0),
        row("corrupt", corrupt, 20, 64, 36, 24.0),
        row("short", clip("short", 5, 64, 36, 24.0), 5, 64, 36, 24.0),
        row("outsider", clip("outsider", 20, 64, 36, 24.0), 20, 64, 36, 24.0, member=False),
        {**row("errored", None, 20, 64, 36, 24.0), "error": "upstream"},
    ]
    schema = pa.schema([("clip_id", pa.string()), ("clip_uri", pa.string()), ("num_frames", pa.int64()),
                        ("width", pa.int32()), ("height", pa.int32()), ("fps", pa.float64()), ("error", pa.string()),
                        ("caption_t2v", pa.string()), ("in_D_test", pa.bool_()), ("crop_box", pa.list_(pa.int32()))])
    return run_stage(ctx, "D_test", ClipsConfig(), [], lambda work: pa.Table.from_pylist(rows, schema=schema))


@pytest.mark.slow
def test_stage_caches_reuses_and_records_errors(make_cfg, tmp_path, checkpoint):
    from infra import manifest as mf
    from infra.session import open_run
    from infra.video import iter_frames
    from models.checkpoint import load_pipeline_components
    from tasks.train import latents as stage

    ctx = open_run(make_cfg(), "latents-a")
    dataset = _dataset(ctx, tmp_path)
    cfg = LatentsConfig(shard_samples=2, images_per_video=2, batch_size=2)
    first = stage.run(ctx, cfg, dataset, checkpoint, "256p", RES, "images+videos")
    assert first.stage == "latents-D_test-256p"
    table = mf.read_table(first)
    errors = table[table["error"].notna()].set_index("clip_id")["error"]
    assert set(errors.index) == {"missing", "corrupt"}  # one row each; the stage goes on
    assert "decode failed" in errors["corrupt"] and "nope.mp4" in errors["missing"]
    good = table[table["error"].isna()]
    assert sorted(good["kind"]) == ["image"] * 6 + ["video"] * 2 and "outsider" not in set(table["clip_id"])
    assert set(good[good["kind"] == "video"]["clip_id"]) == {"wide", "cropped"}  # "short" fills no duration bin
    assert first.stats["encoded"] == 8 and first.stats["reused"] == 0 and first.stats["samples_per_s"] > 0
    video = good[(good["clip_id"] == "wide") & (good["kind"] == "video")].iloc[0]
    assert video["bucket"] == "f5-ar1.78-32x64" and video["fps"] == 24 and video["latent_frames"] == 5
    cropped = good[(good["clip_id"] == "cropped") & (good["kind"] == "video")].iloc[0]
    assert cropped["bucket"] == "f5-ar0.56-64x32" and cropped["fps"] == 24  # 32x48 box is portrait; 30 -> 24 fps
    assert len({u for u in good["shard_uri"]}) >= 3  # shard_samples=2

    cache = stage.open_cache(first)
    assert len(cache) == 8 and sorted(map(len, cache.buckets().values())) == [1, 1, 2, 4]
    sample = cache.get(next(i for i, r in enumerate(cache.rows) if r["clip_id"] == "wide" and r["kind"] == "video"))
    assert sample.latent.shape == (16, 5, 4, 8) and sample.text.shape[1] == 32 and sample.fps == 24
    frames = np.stack([f for _, f in iter_frames(str(tmp_path / "wide.mp4"))])
    vae = load_pipeline_components(checkpoint)["vae"]
    torch.testing.assert_close(sample.latent, le.encode_video(vae, frames[1:18], (32, 64)), atol=1e-4, rtol=1e-4)
    image = cache.get(next(i for i, r in enumerate(cache.rows) if r["clip_id"] == "cropped" and r["kind"] == "image"))
    assert image.latent.shape == (16, 1, 8, 4) and image.text.shape[0] == 1  # empty caption: just </s>

    # Another run (same run root -> same default cache) encodes nothing; the manifest is the same.
    again = stage.run(open_run(make_cfg(), "latents-b"), cfg, dataset, checkpoint, "256p", RES, "images+videos")
    assert again.stats["encoded"] == 0 and again.stats["reused"] == 8
    assert again.fingerprint == first.fingerprint

    # A different resolution is a different folder of the same encoder's cache.
    res360 = ResolutionConfig(height=48, video_frames=[9, 17])
    other = stage.run(ctx, cfg, dataset, checkpoint, "360p", res360, "videos", fps_only=24)
    assert other.stats["encoded"] == 2 and other.stats["cache_folder"] != first.stats["cache_folder"]
    assert "too short" in mf.read_table(other).set_index("clip_id").loc["short", "error"]
    assert os.path.dirname(other.stats["cache_folder"]) == os.path.dirname(first.stats["cache_folder"])
    assert other.stats["cache_folder"].startswith(str(tmp_path / "latent-cache"))
    assert stage.open_cache(other).get(0).latent.shape[2:] == (6, 10)  # 48x80 at 16:9
    none16 = stage.run(ctx, cfg, dataset, checkpoint, "360p", res360, "videos", fps_only=16)
    assert none16.row_count == 0


def _shard(folder, keys):
    from tasks.train.lib.latent_cache import write_shard

    tensors = {f"{k}.latent": torch.full((16, 1, 2, 2), float(i)) for i, k in enumerate(keys)}
    tensors |= {f"{k}.text": torch.ones(3, 32) * i for i, k in enumerate(keys)}
    return write_shard(folder, tensors, {k: {"clip_id": k} for k in keys})


def _rows(index):
    return [{"clip_id": k, "kind": "image", "bucket": "f1-ar1.00-16x16", "fps": 24, "shard_uri": u, "key": k,
             "error": None} for k, u in sorted(index.items())]


def test_index_names_only_committed_shards(tmp_path):
    from tasks.train.lib.latent_cache import LatentCache, load_index

    folder = str(tmp_path / "cache" / "fp" / "32p")
    assert load_index(folder) == {}
    shard = _shard(folder, ["a", "b"])
    (tmp_path / "cache" / "fp" / "32p" / "shard-interrupted.safetensors").write_bytes(b"half")  # no index
    index = load_index(folder)
    assert index == {"a": shard, "b": shard}
    os.remove(shard)  # an index whose shard is gone is ignored, not trusted
    assert load_index(folder) == {}
    shard = _shard(folder, ["c"])
    cache = LatentCache(_rows(load_index(folder)) + [{"clip_id": "x", "error": "bad"}])
    assert len(cache) == 1 and cache.buckets() == {"f1-ar1.00-16x16": [0]}
    import pickle

    assert pickle.loads(pickle.dumps(cache)).get(0).text.shape == (3, 32)


def test_cache_on_s3(monkeypatch, tmp_path):
    from s3_server import moto_s3

    from infra import storage
    from tasks.train.lib.latent_cache import LatentCache, load_index

    with moto_s3(monkeypatch, "reelflow-latents-test") as (endpoint, _):
        storage.configure_storage(endpoint)
        try:
            folder = "s3://reelflow-latents-test/latent-cache/fp/32p"
            shard = _shard(folder, ["a", "b"])
            index = load_index(folder)
            assert index == {"a": shard, "b": shard} and shard.startswith("s3://")
            cache = LatentCache(_rows(index))
            assert cache.get(1).latent.mean().item() == 1.0 and cache.get(0).text.shape == (3, 32)
        finally:
            storage.configure_storage(None)
            monkeypatch.delenv("REELFLOW_S3_ENDPOINT_URL", raising=False)


def test_a_still_is_one_image_sample_in_image_and_video_stages_and_none_in_video_stages():
    """An image source reaches training as a 1-frame clip (media=image): the 256p/360p stages take it
    as an image sample (report 3.3, joint image+video pretraining); a videos-only stage has no use for it."""
    from tasks.train.latents import plan_clip

    still = {"clip_id": "still", "fps": 24.0, "num_frames": 1, "width": 320, "height": 180, "crop_box": None,
             "caption_t2v": "a lighthouse", "clip_uri": "clips/still.mp4", "media": "image"}
    samples, why = plan_clip(still, RES, "images+videos", 1, {})
    assert why is None and [(s["kind"], s["frames"], s["latent_frames"]) for s in samples] == [("image", [0], 1)]
    assert samples[0]["bucket"] and samples[0]["caption"] == "a lighthouse"
    assert len(plan_clip(still, RES, "images+videos", 3, {})[0]) == 1  # one still, not three copies of it
    samples, why = plan_clip(still, RES, "videos", 1, {})
    assert samples == [] and "too short" in why
