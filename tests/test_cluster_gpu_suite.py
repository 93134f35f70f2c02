"""benchmarks/gpu_suite.sh's CPU dry run (tiny shapes): every step of the GPU suite runs and lands in one JSON
that says it was a dry run and measured nothing. The GPU numbers themselves need a GPU (not here)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("train_ckpt_off", "train_ckpt_on", "generate_540p", "caption_vllm_vs_transformers", "transnet_full")


@pytest.mark.slow  # a few minutes on 2 idle cores: five tiny benchmark processes (15+ min under heavy load)
@pytest.mark.timeout(2400)
def test_gpu_suite_dry_run_writes_every_step(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--dry-run", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["measured"] is False
    for step in STEPS:
        assert result[step]["status"] == "ok", (step, result[step]["status"])
    off, on = result["train_ckpt_off"]["result"], result["train_ckpt_on"]["result"]
    assert not off["checkpointing"] and on["checkpointing"]
    assert off["flops_per_step"] > 0 and 0 < off["mfu"] < 1
    assert result["transnet_full"]["result"]["frames"] == 100 and result["transnet_full"]["result"]["frames_per_s"] > 0
    caption = result["caption_vllm_vs_transformers"]["result"]
    assert caption["transformers"]["tokens"] == 2 * 4 and caption["transformers"]["tokens_per_s"] > 0
    assert "not measured" in caption["vllm"]["status"]  # vLLM runs on CUDA only
