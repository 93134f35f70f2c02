"""CFG-parallel generation (two processes, gloo on CPU) equals the single-process sampler."""

from __future__ import annotations

import pytest
import torch
from df_reference import make_cfg, relative_error

from models.checkpoint import init_checkpoint, load_pipeline_components
from models.df_parallel import generate_cfg_parallel
from models.df_sampler import generate_df

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return init_checkpoint("tiny", str(tmp_path_factory.mktemp("ckpt") / "df"))


def test_two_processes_equal_one(checkpoint):
    # Async causal blocks over 2 windows with re-noised history: every row exchanges the branches' predictions.
    cfg = make_cfg(num_frames=49, base_num_frames=29, overlap_history=9, ar_step=1, causal_block_size=2,
                   addnoise_condition=20)
    components = load_pipeline_components(checkpoint)
    single = generate_df(components, cfg)
    parallel = generate_cfg_parallel(checkpoint, cfg)
    assert parallel.frames.shape == single.frames.shape == (49, 32, 32, 3)
    assert relative_error(parallel.latents, single.latents) <= 1e-6
    assert relative_error(parallel.frames, single.frames) <= 1e-6
    # The unconditional branch counts: without guidance the video is another one.
    unguided = generate_df(components, cfg.model_copy(update={"guidance_scale": 1.0}))
    assert relative_error(unguided.frames, single.frames) > 1e-3


def test_needs_two_branches_and_reports_a_failing_process(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="guidance_scale > 1"):
        generate_cfg_parallel(checkpoint, make_cfg(guidance_scale=1.0))
    with pytest.raises(RuntimeError, match="CFG-parallel generation failed") as err:
        generate_cfg_parallel(str(tmp_path / "missing"), make_cfg(num_frames=5, base_num_frames=5))
    assert "missing" in str(err.value)  # the failing process's own error comes back
