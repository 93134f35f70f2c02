"""`reelflow init-checkpoint` and `reelflow generate` (flows/cli_generate.py, flows/generate.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from df_reference import relative_error

from flows.cli import main
from flows.cli_generate import register

torch.set_num_threads(2)
if "generate" not in main.commands:  # the lead wires register(main) into flows/cli.py
    register(main)

TINY = ["--height", "32", "--width", "32", "--steps", "3", "--max-sequence-length", "16", "--guidance-scale", "5"]
LONG_ASYNC = ["--num-frames", "41", "--base-num-frames", "21", "--overlap-history", "5", "--ar-step", "1",
              "--causal-block-size", "2", "--addnoise-condition", "20"]


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    for name, extra in (("df", []), ("t2v", ["--full-sequence"])):
        result = invoke("init-checkpoint", "--profile", "tiny", "--out", root / name, *extra)
        assert result.exit_code == 0, result.output
    return {"df": str(root / "df"), "t2v": str(root / "t2v")}


def test_init_checkpoint_records_the_pipeline(checkpoints):
    from models.checkpoint import is_diffusion_forcing

    assert is_diffusion_forcing(checkpoints["df"]) and not is_diffusion_forcing(checkpoints["t2v"])
    index = json.loads(open(f"{checkpoints['t2v']}/model_index.json").read())
    assert index["_class_name"] == "SkyReelsV2Pipeline"
    again = invoke("init-checkpoint", "--out", checkpoints["df"])
    assert again.exit_code != 0 and "already exists" in again.output


@pytest.mark.parametrize("args, message", [
    (["--height", "40"], "height must be a multiple of 16, got 40"),
    (["--num-frames", "95"], "use 93 or 97"),
    (["--num-frames", "97", "--base-num-frames", "57", "--overlap-history", "13", "--causal-block-size", "5"],
     "use overlap_history >= 17"),
    (["--num-frames", "97", "--base-num-frames", "57"], "overlap_history is required"),
])
def test_bad_settings_fail_before_any_work(checkpoints, tmp_path, args, message):
    result = invoke("generate", "--checkpoint", checkpoints["df"], "--prompt", "a cat", "--out", tmp_path / "x.mp4",
                    *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not list(tmp_path.iterdir())


def test_df_mode_on_a_full_sequence_checkpoint_names_the_fix(checkpoints, tmp_path):
    result = invoke("generate", "--checkpoint", checkpoints["t2v"], "--prompt", "a cat", "--out", tmp_path / "x.mp4",
                    *TINY, *LONG_ASYNC)
    assert result.exit_code == 2, result.output
    assert "not diffusion forcing" in result.output and "init-checkpoint" in result.output
    assert "ar_step" in result.output and "long video" in result.output


@pytest.mark.slow
def test_generate_extend_and_full_sequence_end_to_end(checkpoints, tmp_path, make_cfg):
    from mlflow import MlflowClient

    from infra.session import tracker_for
    from infra.video import probe_video
    from models.checkpoint import load_pipeline_components
    from models.df_sampler import generate_df
    from models.generate_config import GenerateConfig

    settings = [f"--set=storage.run_root={tmp_path / 'runs'}", f"--set=state_dir={tmp_path / 'state'}"]
    out, npy = tmp_path / "long.mp4", tmp_path / "long.npy"
    result = invoke("generate", "--checkpoint", checkpoints["df"], "--prompt", "a red car drives", "--seed", 3,
                    "--out", out, "--frames-out", npy, *TINY, *LONG_ASYNC, *settings)
    assert result.exit_code == 0, result.output
    assert probe_video(str(out)).num_frames == 41
    cfg = GenerateConfig(prompt="a red car drives", seed=3, height=32, width=32, num_inference_steps=3,
                         max_sequence_length=16, guidance_scale=5, num_frames=41, base_num_frames=21,
                         overlap_history=5, ar_step=1, causal_block_size=2, addnoise_condition=20)
    components = load_pipeline_components(checkpoints["df"])
    np.testing.assert_array_equal(np.load(npy), generate_df(components, cfg).frames)  # lossless frames

    # Extension of that mp4, frames as PNGs: the input's frames come first, then 37 - 5 new ones.
    pngs = tmp_path / "pngs"
    result = invoke("generate", "--checkpoint", checkpoints["df"], "--prompt", "the car stops", "--video", out,
                    "--num-frames", 37, "--base-num-frames", 21, "--overlap-history", 5, "--out",
                    tmp_path / "ext.mp4", "--frames-out", pngs, *TINY, *settings)
    assert result.exit_code == 0, result.output
    assert len(list(pngs.glob("*.png"))) == probe_video(str(tmp_path / "ext.mp4")).num_frames == 41 + 32

    # Full-sequence text-to-video on a non-DF checkpoint is its own diffusers pipeline.
    from diffusers import SkyReelsV2Pipeline

    result = invoke("generate", "--checkpoint", checkpoints["t2v"], "--prompt", "a cat", "--num-frames", 17,
                    "--base-num-frames", 17, "--out", tmp_path / "fs.mp4", "--frames-out", tmp_path / "fs.npy",
                    *TINY, *settings)
    assert result.exit_code == 0, result.output
    pipe = SkyReelsV2Pipeline.from_pretrained(checkpoints["t2v"])
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt="a cat", negative_prompt="", height=32, width=32, num_frames=17, num_inference_steps=3,
               guidance_scale=5, generator=torch.Generator().manual_seed(0), max_sequence_length=16).frames[0]
    assert relative_error(np.load(tmp_path / "fs.npy"), ref) <= 1e-6

    # One MLflow run per generation, with the settings as params and the mp4 as an artifact.
    cfg_pipeline = make_cfg(f"storage.run_root={tmp_path / 'runs'}", f"state_dir={tmp_path / 'state'}")
    tracker = tracker_for(cfg_pipeline)
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`reelflow.kind` = 'generate'")
    assert sorted(r.data.params["mode"] for r in runs) == ["extend", "t2v", "t2v"]
    long_run = next(r for r in runs if r.data.params.get("causal_block_size") == "2")
    assert long_run.data.params["ar_step"] == "1" and long_run.info.status == "FINISHED"
    assert long_run.data.metrics["frames"] == 41
    artifacts = MlflowClient(tracker.tracking_uri).list_artifacts(long_run.info.run_id, "video")
    # the video as generated, plus what a person watches in MLflow: an upscaled copy and a frame strip
    assert sorted(a.path for a in artifacts) == ["video/long.mp4", "video/long_strip.png", "video/long_view.mp4"]
