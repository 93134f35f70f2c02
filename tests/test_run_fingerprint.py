"""infra.run_fingerprint: what a repaired run must share with an uninterrupted one, and nothing else (timings)."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import torch
from safetensors.torch import save_file

from infra import manifest as mf
from infra.run_fingerprint import differences, fingerprint


def _publish(run: str, stage: str, table: pa.Table, weights: dict | None = None) -> None:
    final = f"{run}/{stage}"
    tmp = mf.tmp_dir_for(final)
    if weights is not None:  # a weight folder inside the stage folder, as the training stages publish it
        os.makedirs(f"{tmp}/checkpoint/transformer", exist_ok=True)
        save_file(weights, f"{tmp}/checkpoint/transformer/diffusion_pytorch_model.safetensors")
    mf.publish(table, tmp, final, stage=stage, config_hash="c", inputs=[], code_version="t", started=time.time())


def _run(root, name: str, *, loss2: float = 0.5, weight: float = 1.0, speed: float = 9.0, kept=(True, False)) -> str:
    run = str(root / name)
    _publish(run, "clips", pa.table({"clip_id": ["b", "a"], "error": [None, None]}))
    _publish(run, "D_256p", pa.table({"clip_id": ["b", "a"], "in_D_256p": list(kept)}))
    curve = pa.table({"step": [1, 2], "loss": [1.0, loss2], "lr": [1e-4, 1e-4], "grad_norm": [2.0, 1.0],
                      "batch": [1, 1], "samples_per_s": [speed, speed]})
    _publish(run, "pretrain-256p", curve, {"w": torch.full((2, 3), weight), "b": torch.zeros(3)})
    return run


def test_equal_runs_match_whatever_their_timings(tmp_path):
    a, b = _run(tmp_path, "a"), _run(tmp_path, "b", speed=1.0)
    fa = fingerprint(a)
    assert fa["clips.clip_ids"] == ["a", "b"] and fa["D_256p.members"] == ["b"]
    assert [r["loss"] for r in fa["pretrain-256p.curve"]] == [1.0, 0.5] and "samples_per_s" not in fa["pretrain-256p.curve"][0]
    assert differences(fa, fingerprint(b)) == []


def test_a_changed_weight_loss_or_membership_is_named(tmp_path):
    base = fingerprint(_run(tmp_path, "a"))
    weight = fingerprint(_run(tmp_path, "w", weight=1.0 + 2**-20))  # one ulp-scale change in one tensor
    assert [d.split(":")[0] for d in differences(base, weight)] == ["pretrain-256p.checkpoint"]
    loss = fingerprint(_run(tmp_path, "l", loss2=0.5000001))
    assert [d.split(":")[0] for d in differences(base, loss)] == ["pretrain-256p.curve"]
    members = fingerprint(_run(tmp_path, "m", kept=(True, True)))
    assert [d.split(":")[0] for d in differences(base, members)] == ["D_256p.members"]
    assert [d.split(":")[0] for d in differences(base, fingerprint(str(tmp_path / "a"), ["clips", "video"]))] == [
        "D_256p.members", "pretrain-256p.checkpoint", "pretrain-256p.curve", "video.published"]


def test_a_folder_that_is_no_stage_is_left_out_unless_named(tmp_path):
    run = _run(tmp_path, "a")
    os.makedirs(f"{run}/audits/store")  # the audit store lives in the run folder, unpublished
    assert not any(k.startswith("audits.") for k in fingerprint(run))
    assert fingerprint(run, ["audits"]) == {"audits.published": False}
