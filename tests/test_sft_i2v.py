"""Stage sft-i2v (report section 5.5, issue 19 item 2) on a tiny T2V checkpoint and a real latent cache of two
moving-pattern clips: the published folder loads in diffusers' SkyReelsV2ImageToVideoPipeline and generates, it
is registered as the run's i2v model, and a stage resumed from a step checkpoint ends on the very weights of an
unbroken run."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
import torch
from synthetic_pool import stage_ctx

from infra.checkpoints import CHECKPOINT, checkpoint_dir
from infra.config import load_config
from infra.config_train import TrainStageConfig
from infra.stage import run_stage
from models.checkpoint import init_checkpoint
from models.dit import load_transformer, write_checkpoint
from tasks.train import training

torch.set_num_threads(2)
CAPTIONS = ["a red square moves right, slow pan", "a blue disc drifts down, tilt"]


def moving_clip(shift: tuple[int, int], colour: tuple[int, int, int], frames: int = 9) -> np.ndarray:
    """uint8 [T, 64, 112, 3]: a textured background and a block moving ``shift`` pixels per frame."""
    yy, xx = np.mgrid[0:64, 0:112]
    out = []
    for t in range(frames):
        img = np.stack([(xx * 2 + t * shift[0]) % 256, (yy * 3 + t * shift[1]) % 256, np.full_like(xx, 90)], -1)
        y, x = 20 + t * shift[1], 30 + t * shift[0]
        img[y:y + 16, x:x + 16] = colour
        out.append(img.astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):

    from infra.config_train import LatentsConfig
    from models.checkpoint import load_pipeline_components
    from models.latent_encode import encode_text, encode_video
    from tasks.train.latents import LATENTS_SCHEMA
    from tasks.train.lib.latent_cache import write_shard

    root = tmp_path_factory.mktemp("i2v")
    cfg = load_config("tiny", [f"storage.run_root={root / 'runs'}", f"state_dir={root / 'state'}",
                               "train.stages.sft-i2v.steps=2", "train.stages.sft-i2v.checkpoint_every=1",
                               "train.stages.sft-i2v.lr=1e-3", "train.sample.steps=2"])
    ctx = stage_ctx(cfg, root, "i2v-test")
    base = init_checkpoint("tiny", str(root / "base"), diffusion_forcing=False)  # the full-sequence T2V model

    def sft_body(work):
        write_checkpoint(base, load_transformer(base), os.path.join(work.tmp_uri, CHECKPOINT))
        return pa.table({"step": [1], "loss": [1.0]})

    sft = run_stage(ctx, "sft-540p", TrainStageConfig(dataset="D_540p_sft", resolution="540p", steps=1, lr=1e-5),
                    [], sft_body)
    parts = load_pipeline_components(base)
    tensors, meta, rows = {}, {}, []
    texts = encode_text(parts["tokenizer"], parts["text_encoder"], CAPTIONS, 512)
    for i, (clip, text) in enumerate(zip((moving_clip((3, 0), (220, 30, 30)), moving_clip((0, 2), (30, 30, 220))),
                                         texts, strict=True)):
        key = f"k{i}"
        tensors[f"{key}.latent"], tensors[f"{key}.text"] = encode_video(parts["vae"], clip), text.clone()
        meta[key] = {"clip_id": f"c{i}", "kind": "video", "bucket": "b", "fps": 24, "frames": list(range(9))}
    shard = write_shard(str(root / "cache"), tensors, meta)
    rows = [{"clip_id": f"c{i}", "kind": "video", "bucket": "f3-1.78-64x112", "latent_frames": 3, "height": 64,
             "width": 112, "fps": 24, "caption": CAPTIONS[i], "shard_uri": shard, "key": f"k{i}", "error": None}
            for i in range(2)]
    latents = run_stage(ctx, "latents-D_540p_sft-540p", LatentsConfig(), [],
                        lambda work: pa.Table.from_pylist(rows, schema=LATENTS_SCHEMA))
    return {"root": root, "cfg": cfg, "ctx": ctx, "sft": sft, "latents": latents}


@pytest.mark.slow
def test_stage_publishes_an_i2v_folder_diffusers_runs_and_registers_it(world):
    from diffusers import SkyReelsV2ImageToVideoPipeline
    from PIL import Image

    ctx, cfg = world["ctx"], world["cfg"]
    out = training.run(ctx, cfg.train, "sft-i2v", world["latents"], world["sft"])
    folder = checkpoint_dir(out)
    pipe = SkyReelsV2ImageToVideoPipeline.from_pretrained(folder)
    assert pipe.transformer.config.in_channels == 36 and pipe.transformer.config.image_dim == 32
    image = Image.fromarray(np.full((64, 112, 3), 128, np.uint8))
    video = pipe(image=image, prompt="a red square moves right", height=64, width=112, num_frames=5, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    assert video.shape == (5, 64, 112, 3) and np.isfinite(video).all()
    # trained: the zero-initialised paths moved off zero, the T2V weights changed
    weights = pipe.transformer.state_dict()
    assert weights["patch_embedding.weight"][:, 16:].abs().sum() > 0
    assert weights["blocks.0.attn2.add_v_proj.weight"].abs().sum() > 0
    stats = out.stats
    assert stats["architecture"]["in_channels"] == 36
    report = stats["first_frame"]
    assert report["clips"] == ["c0", "c1"] and 0 < report["before"]["first_frame_mae"] < 1
    assert 0 < report["after"]["first_frame_mae"] < 1
    version = ctx.tracker.client.get_model_version_by_alias(f"{cfg.tracking.experiment}-tiny-i2v", "sft-i2v")
    assert version.source == folder
    losses = [m.value for m in ctx.tracker.client.get_metric_history(version.run_id, "first_frame_loss")]
    assert len(losses) == 2 and all(np.isfinite(losses))
    # the generation CLI's path runs it with a first frame, and refuses it without one
    from models.generate_config import GenerateConfig
    from tasks.generate.lib.generator import generate_video, preflight

    image.save(world["root"] / "first.png")
    gen = GenerateConfig(prompt="a red square moves right", num_frames=5, base_num_frames=5, height=64, width=112,
                         num_inference_steps=2)
    facts = generate_video(folder, gen, str(world["root"] / "i2v.mp4"), image=str(world["root"] / "first.png"))
    assert facts["sampler"] == "full-sequence" and facts["frames"] == 5
    with pytest.raises(ValueError, match="needs an image"):
        preflight(folder, gen)


@pytest.mark.slow
def test_a_resumed_stage_ends_on_the_unbroken_runs_weights(world, tmp_path):
    from tasks.train.lib.worker import train_worker

    cfg = world["cfg"]
    stage = cfg.train.stages["sft-i2v"]
    encoder = training.image_encoder(cfg)

    def job(steps: int, steps_dir: str, out: str) -> dict:
        return {"stage": stage.model_copy(update={"steps": steps}).model_dump(mode="json"),
                "train": cfg.train.model_dump(mode="json"), "latents": world["latents"].model_dump(mode="json"),
                "init_dir": checkpoint_dir(world["sft"]), "out_dir": str(tmp_path / out), "steps_dir": steps_dir,
                "mlflow_run": None, "image_encoder_dir": encoder}

    unbroken = train_worker(job(2, str(tmp_path / "a"), "unbroken"))
    first = train_worker(job(1, str(tmp_path / "b"), "first"))  # "killed" after its step-1 checkpoint
    resumed = train_worker(job(2, str(tmp_path / "b"), "resumed"))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in unbroken]
    assert resumed[0]["loss"] == first[0]["loss"]
    a, b = load_transformer(str(tmp_path / "unbroken")).state_dict(), load_transformer(str(tmp_path / "resumed")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
