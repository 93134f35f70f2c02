"""Text reports for data engineers: what a run produced, what failed and why."""

from __future__ import annotations

import pandas as pd

from infra import manifest as mf
from infra import storage
from infra.config import PipelineConfig


def _run_uri(cfg: PipelineConfig, run_id: str) -> str:
    uri = storage.join(storage.normalize(cfg.storage.run_root), run_id)
    if not storage.exists(uri):
        raise FileNotFoundError(f"no run {run_id!r} under {cfg.storage.run_root} (list: ls {cfg.storage.run_root})")
    return uri


def describe_run(cfg: PipelineConfig, run_id: str) -> str:
    run_uri = _run_uri(cfg, run_id)
    fs = storage.filesystem(run_uri)
    lines = [f"run {run_id} at {run_uri}", f"{'stage':<10} {'rows':>7} {'errors':>7} {'seconds':>8}  fingerprint"]
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(storage._path(run_uri), detail=False)]
    names = [n for n in names if not n.startswith(".") and n != "audits"]  # audits/ holds verdicts
    published = {n: mf.load_success(storage.join(run_uri, n)) for n in names}
    # Pipeline order = publication order; unpublished folders (interrupted stages) last.
    for name in sorted(names, key=lambda n: (published[n] is None, published[n].created_at if published[n] else 0, n)):
        m = published[name]
        if m is None:
            lines.append(f"{name:<10} {'-':>7} {'-':>7} {'-':>8}  (not published: interrupted or running)")
        else:
            lines.append(f"{name:<10} {m.row_count:>7} {m.error_count:>7} {m.seconds:>8.1f}  {m.fingerprint}")
    return "\n".join(lines)


def describe_stage(cfg: PipelineConfig, run_id: str, stage: str, rows: int = 5) -> str:
    stage_uri = storage.join(_run_uri(cfg, run_id), stage)
    m = mf.load_success(stage_uri)
    if m is None:
        raise FileNotFoundError(f"stage {stage!r} of run {run_id!r} is not published (no {mf.SUCCESS} in {stage_uri})")
    df = mf.read_table(m)
    out = [
        f"stage {stage} of run {run_id}: {m.row_count} rows, {m.error_count} errors, {m.seconds:.1f}s",
        f"  uri: {m.uri}",
        f"  fingerprint {m.fingerprint}, config {m.config_hash}, code {m.code_version}",
    ]
    for key, value in sorted(m.stats.items()):
        out.append(f"  {key}: {value}")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_colwidth", 60):
        if "error" in df.columns and df["error"].notna().any():
            errs = df[df["error"].notna()]
            key = [c for c in ("source_uri", "clip_id", "shot_id", "source_id") if c in df.columns][:1]
            out += [f"\nerror rows ({len(errs)}):", errs[key + ["error"]].to_string(index=False)]
        ok = df[df["error"].isna()] if "error" in df.columns else df
        out += [f"\nsample rows ({min(rows, len(ok))} of {len(ok)}):", ok.head(rows).to_string(index=False)]
    return "\n".join(out)
