"""TeaCache (arXiv 2411.19108) as an option of the diffusion-forcing sampler: off and threshold 0 are exact,
a large threshold skips block-stack passes and stays close, and runs repeat bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from df_reference import make_cfg, relative_error

from models.checkpoint import init_checkpoint, load_pipeline_components
from models.df_sampler import DFSampler
from models.teacache import TeaCache

torch.set_num_threads(2)

CASES = {
    "sync": dict(num_frames=17, base_num_frames=17, num_inference_steps=8),
    # two windows, blocks of 2, async, KV cache on (forced passes store keys/values), unbatched guidance
    "async-2-windows": dict(num_frames=41, base_num_frames=25, overlap_history=9, ar_step=1, causal_block_size=2,
                            num_inference_steps=6, batch_guidance=False),
}


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    return load_pipeline_components(init_checkpoint("tiny", str(tmp_path_factory.mktemp("ckpt") / "df")))


@pytest.fixture(scope="module")
def baseline(components):
    # TeaCache wraps the diffusers block loop, so its reference is that pass (prune_rows off) without it.
    return {name: DFSampler(components).generate(make_cfg(**s, prune_rows=False)).frames for name, s in CASES.items()}


def run(components, **settings):
    sampler = DFSampler(components)
    result = sampler.generate(make_cfg(**settings))
    return result, sampler.stats


@pytest.mark.parametrize("name", list(CASES))
def test_off_and_threshold_zero_are_exact(components, baseline, name):
    off, stats = run(components, **CASES[name], teacache=False, prune_rows=False)
    assert stats == {} and off.stats is None
    np.testing.assert_array_equal(off.frames, baseline[name])
    pruned, _ = run(components, **CASES[name])  # the default pass: same outputs up to float rounding
    assert relative_error(pruned.frames, baseline[name]) < 1e-5
    zero, stats = run(components, **CASES[name], teacache=True, teacache_threshold=0.0)
    np.testing.assert_array_equal(zero.frames, baseline[name])
    assert stats["teacache_skipped"] == 0 and stats["teacache_computed"] > 0


@pytest.mark.parametrize("name", list(CASES))
def test_large_threshold_skips_and_stays_close(components, baseline, name):
    settings = dict(**CASES[name], teacache=True, teacache_threshold=0.5, teacache_retention_steps=1)
    result, stats = run(components, **settings)
    assert stats["teacache_skipped"] > 0 and stats["teacache_computed"] > 0
    assert result.stats == stats
    assert np.isfinite(result.frames).all()
    assert relative_error(result.frames, baseline[name]) < 0.25
    again, stats_again = run(components, **settings)
    np.testing.assert_array_equal(again.frames, result.frames)
    assert stats_again == stats


def test_more_retention_skips_fewer(components):
    settings = dict(**CASES["sync"], teacache=True, teacache_threshold=0.5)
    skipped = [run(components, **settings, teacache_retention_steps=r)[1]["teacache_skipped"] for r in (1, 4)]
    assert skipped[0] > skipped[1]
    # with every step retained nothing is skipped
    assert run(components, **settings, teacache_retention_steps=8)[1]["teacache_skipped"] == 0


def test_transformer_blocks_restored(components):
    blocks = components["transformer"].blocks
    run(components, **CASES["sync"], teacache=True)
    assert components["transformer"].blocks is blocks


def test_rescale_polynomial_and_validation():
    assert TeaCache(0.1)._rescale(0.3) == 0.3  # identity unless coefficients are given
    assert TeaCache(0.1, coefficients=[2.0, 1.0])._rescale(0.3) == pytest.approx(1.6)
    with pytest.raises(ValueError):
        TeaCache(-1.0)


def test_cli_flags_reach_the_config(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import flows.cli_generate as cli_generate
    from flows.cli import main

    if "generate" not in main.commands:
        cli_generate.register(main)
    seen = {}

    def stop(**values):  # capture the validated settings, then stop before any work
        seen["cfg"] = original(**values)
        raise SystemExit(0)

    original = cli_generate._settings
    monkeypatch.setattr(cli_generate, "_settings", stop)
    args = ["generate", "--checkpoint", str(tmp_path), "--prompt", "a cat", "--out", str(tmp_path / "x.mp4")]
    CliRunner().invoke(main, args + ["--teacache", "--teacache-threshold", "0.2", "--teacache-retention", "3"])
    cfg = seen["cfg"]
    assert cfg.teacache and cfg.teacache_threshold == 0.2 and cfg.teacache_retention_steps == 3
    CliRunner().invoke(main, args)
    assert not seen["cfg"].teacache and seen["cfg"].teacache_threshold == 0.1
    monkeypatch.setattr(cli_generate, "_settings", original)
    bad = CliRunner().invoke(main, args + ["--teacache", "--teacache-threshold", "-1"])
    assert bad.exit_code == 2 and "teacache_threshold" in bad.output, bad.output
