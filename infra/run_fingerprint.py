"""What must not change when a run is interrupted and repaired: a comparable fingerprint of a run's outputs.

The report's self-repair (SkyReels-V2, arXiv 2504.13074, section 3.5: fault detection, resource
reallocation, checkpoint recovery) is only worth its name if the repaired run ends where an uninterrupted one
would. ``fingerprint(run_uri)`` reads a run's published stages (local folder or S3) and keeps what defines
its outcome, not how fast it got there: the clip ids, each dataset's members, each training stage's loss curve
(step, loss, lr, grad norm, batch; no throughput or memory columns) and a digest of every tensor of every
published weight folder. ``differences(a, b)`` names what differs.
"""

from __future__ import annotations

import hashlib
import os

from infra import manifest as mf
from infra import storage

# Loss-curve columns that are outcomes; samples_per_s, tokens_per_s and peak_memory_mb are timings.
CURVE_COLUMNS = ("step", "loss", "lr", "grad_norm", "batch")
# Published weight folders, by the folder name a weight-producing stage gives them (infra.checkpoints).
WEIGHT_FOLDERS = ("checkpoint", "reward_model", "captioner")


def tensor_digest(folder: str) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) of every ``*.safetensors`` file below ``folder``,
    in sorted order: equal iff the weights are bit-identical, whatever the file layout's metadata."""
    import torch
    from safetensors.torch import load_file

    local = storage.fetch_folder(folder)
    digest = hashlib.sha256()
    files = sorted(os.path.relpath(os.path.join(root, name), local) for root, _, names in os.walk(local)
                   for name in names if name.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors below {folder}")
    for rel in files:
        tensors = load_file(os.path.join(local, rel))
        for name in sorted(tensors):
            t = tensors[name].contiguous()
            digest.update(f"{rel}:{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(run_uri: str, stages: list[str] | None = None) -> dict[str, object]:
    """``{"<stage>.<what>": value}`` for the published stages of ``run_uri``: all of them (folders without a
    ``_SUCCESS.json``, such as the audit store, are no stage), or ``stages``, each one unpublished on record."""
    names = stages if stages is not None else [s for s in storage.list_folders(run_uri) if not s.startswith(".")
                                               and storage.exists(storage.join(run_uri, s, mf.SUCCESS))]
    out: dict[str, object] = {}
    for name in names:
        manifest = mf.load_success(storage.join(run_uri, name))
        if manifest is None:
            out[f"{name}.published"] = False
            continue
        table = mf.read_arrow(manifest)
        cols = set(table.column_names)
        if name == "clips" and "clip_id" in cols:
            out["clips.clip_ids"] = sorted(table.column("clip_id").to_pylist())
        flag = f"in_{name}"
        if flag in cols:
            rows = zip(table.column("clip_id").to_pylist(), table.column(flag).to_pylist(), strict=True)
            out[f"{name}.members"] = sorted(c for c, keep in rows if keep)
        if {"step", "loss"} <= cols:
            curve = {c: table.column(c).to_pylist() for c in CURVE_COLUMNS if c in cols}
            out[f"{name}.curve"] = [dict(zip(curve, row, strict=True)) for row in zip(*curve.values(), strict=True)]
        for folder in WEIGHT_FOLDERS:
            uri = storage.join(manifest.uri, folder)
            if storage.exists(uri) and storage.list_files(uri):
                out[f"{name}.{folder}"] = tensor_digest(uri)
    return out


def differences(a: dict[str, object], b: dict[str, object]) -> list[str]:
    """The keys whose values differ (or that only one side has), each with a short description."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            diffs.append(f"{key}: only in {'first' if key in a else 'second'}")
        elif a[key] != b[key]:
            diffs.append(f"{key}: {str(a[key])[:200]} != {str(b[key])[:200]}")
    return diffs
