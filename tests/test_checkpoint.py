"""Tiny checkpoint folders load unchanged in the diffusers reference pipeline (models/checkpoint.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.checkpoint import init_checkpoint, load_pipeline_components

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return init_checkpoint("tiny", str(tmp_path_factory.mktemp("ckpt") / "tiny-df"), seed=0)


def test_layout_matches_published_df_folder(tiny_ckpt):
    index = json.loads(open(f"{tiny_ckpt}/model_index.json").read())
    assert index["_class_name"] == "SkyReelsV2DiffusionForcingPipeline"
    assert index["transformer"] == ["diffusers", "SkyReelsV2Transformer3DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKLWan"]
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]
    assert index["scheduler"] == ["diffusers", "UniPCMultistepScheduler"]
    comps = load_pipeline_components(tiny_ckpt)
    assert comps["scheduler"].config.use_flow_sigmas and comps["scheduler"].config.prediction_type == "flow_prediction"
    ids = comps["tokenizer"]("A cat walks, slowly!").input_ids
    assert ids[-1] == comps["tokenizer"].eos_token_id and comps["tokenizer"].unk_token_id not in ids


def test_folder_is_published_atomically(tiny_ckpt, tmp_path):
    with pytest.raises(FileExistsError):
        init_checkpoint("tiny", tiny_ckpt)
    with pytest.raises(ValueError, match="profile must be one of"):
        init_checkpoint("huge", str(tmp_path / "x"))
    assert not list(tmp_path.iterdir())  # a bad profile fails before anything is written


def test_same_seed_same_weights(tiny_ckpt, tmp_path):
    other = init_checkpoint("tiny", str(tmp_path / "again"), seed=0)
    a = load_pipeline_components(tiny_ckpt)["transformer"].state_dict()
    b = load_pipeline_components(other)["transformer"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reference_pipeline_generates_from_tiny_folder(tiny_ckpt):
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    pipe = SkyReelsV2DiffusionForcingPipeline.from_pretrained(tiny_ckpt)
    pipe.set_progress_bar_config(disable=True)
    video = pipe(
        "a red car drives at night", num_inference_steps=2, height=32, width=32, num_frames=9,
        base_num_frames=9, max_sequence_length=32, generator=torch.Generator().manual_seed(0),
    ).frames[0]
    assert video.shape == (9, 32, 32, 3) and np.isfinite(video).all()
