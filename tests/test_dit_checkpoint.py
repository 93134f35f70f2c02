"""Checkpoint folders the trainer reads and writes: clear errors, FPS-embedding removal, diffusers loads them."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from models.checkpoint import init_checkpoint
from models.dit import (
    CheckpointError,
    check_checkpoint,
    load_transformer,
    without_fps_embedding,
    write_checkpoint,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return init_checkpoint("tiny", str(tmp_path_factory.mktemp("ckpt") / "tiny"))


def test_missing_file_is_named(tiny_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "vae" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing vae/config\.json"):
        check_checkpoint(str(broken))
    shutil.rmtree(broken / "transformer")
    with pytest.raises(CheckpointError, match="transformer/config.json"):
        check_checkpoint(str(broken))
    with pytest.raises(CheckpointError, match="does not exist"):
        check_checkpoint(str(tmp_path / "nowhere"))


def test_missing_weights_are_named(tiny_dir, tmp_path):
    broken = tmp_path / "noweights"
    shutil.copytree(tiny_dir, broken)
    for f in (broken / "text_encoder").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CheckpointError, match="missing weights in text_encoder/"):
        check_checkpoint(str(broken))


def test_mismatched_config_key_is_named(tiny_dir, tmp_path):
    broken = tmp_path / "mismatch"
    shutil.copytree(tiny_dir, broken)
    cfg_path = broken / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["text_dim"] = 64
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"text_dim=64 does not match text_encoder/config.json d_model=32"):
        check_checkpoint(str(broken))
    with pytest.raises(CheckpointError, match=r"num_layers=2, expected 30"):
        check_checkpoint(tiny_dir, expect_transformer={"num_layers": 30})


def test_fps_embedding_removal_keeps_every_other_weight(tiny_dir):
    model = load_transformer(tiny_dir)
    stripped = without_fps_embedding(model)
    assert not stripped.config.inject_sample_info
    assert not any(k.startswith("fps_") for k in stripped.state_dict())
    for key, value in stripped.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])


def test_written_checkpoint_loads_in_diffusers_and_generates(tiny_dir, tmp_path):
    """SFT drops the FPS embedding -> a full-sequence T2V folder; both kinds load and generate in diffusers."""
    from diffusers import DiffusionPipeline, SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Pipeline

    model = load_transformer(tiny_dir)
    with torch.no_grad():
        model.proj_out.bias.add_(0.01)  # "trained"
    df_dir = write_checkpoint(tiny_dir, model, str(tmp_path / "df"))
    sft_dir = write_checkpoint(tiny_dir, without_fps_embedding(model), str(tmp_path / "sft"))
    check_checkpoint(df_dir), check_checkpoint(sft_dir)
    df = DiffusionPipeline.from_pretrained(df_dir)
    sft = DiffusionPipeline.from_pretrained(sft_dir)
    assert isinstance(df, SkyReelsV2DiffusionForcingPipeline) and isinstance(sft, SkyReelsV2Pipeline)
    assert torch.equal(df.transformer.proj_out.bias, model.proj_out.bias)
    out = df("a cat", height=32, width=64, num_frames=9, base_num_frames=9, num_inference_steps=2,
             generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    assert out.shape == (9, 32, 64, 3) and out.std() > 0
    out = sft("a cat", height=32, width=64, num_frames=9, num_inference_steps=2,
              generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    assert out.shape == (9, 32, 64, 3)
