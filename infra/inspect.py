"""Reports for data engineers: what a run produced, what failed and why, as text for people
(``describe_*``) and as plain dicts for scripts (``*_info``, what ``reelflow inspect --json`` prints).

Only the columns a report needs are read from Parquet, and sample rows come from the first batch:
a stage of a million clips is inspected without loading its table.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from infra import manifest as mf
from infra import storage
from infra.config import PipelineConfig
from infra.runs import stages_of, where

ID_COLUMNS = ("source_uri", "clip_id", "shot_id", "source_id")
MAX_ERROR_ROWS = 200  # errors listed by a report; the count is always exact


def _run_uri(cfg: PipelineConfig, run_id: str) -> str:
    uri = storage.join(storage.normalize(cfg.storage.run_root), run_id)
    if not storage.exists(uri):
        raise FileNotFoundError(
            f"no run {run_id!r} under {where(cfg.storage.run_root)}: list them with `reelflow runs`; runs "
            f"elsewhere: set REELFLOW_HOME or --set storage.run_root=DIR")
    return uri


def _folders(run_uri: str) -> list[str]:
    fs = storage.filesystem(run_uri)
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(storage._path(run_uri), detail=False)
             if fs.isdir(p)]
    return [n for n in names if not n.startswith(".") and n != "audits"]  # audits/ holds verdicts


def run_info(cfg: PipelineConfig, run_id: str) -> dict:
    """Stages in publication order, then unpublished folders (interrupted or running stages)."""
    run_uri = _run_uri(cfg, run_id)
    published = stages_of(run_uri)
    stages = [{"stage": n, "published": True, "rows": m.row_count, "errors": m.error_count,
               "seconds": round(m.seconds, 3), "fingerprint": m.fingerprint} for n, m in published.items()]
    stages += [{"stage": n, "published": False} for n in sorted(set(_folders(run_uri)) - set(published))]
    return {"run_id": run_id, "uri": run_uri, "stages": stages}


def describe_run(cfg: PipelineConfig, run_id: str) -> str:
    info = run_info(cfg, run_id)
    lines = [f"run {run_id} at {info['uri']}", f"{'stage':<10} {'rows':>7} {'errors':>7} {'seconds':>8}  fingerprint"]
    for s in info["stages"]:
        if s["published"]:
            lines.append(f"{s['stage']:<10} {s['rows']:>7} {s['errors']:>7} {s['seconds']:>8.1f}  {s['fingerprint']}")
        else:
            lines.append(f"{s['stage']:<10} {'-':>7} {'-':>7} {'-':>8}  (not published: interrupted or running)")
    return "\n".join(lines)


def stage_manifest(cfg: PipelineConfig, run_id: str, stage: str) -> mf.Manifest:
    """The stage's manifest; an unknown stage name lists the run's stages."""
    run_uri = _run_uri(cfg, run_id)
    m = mf.load_success(storage.join(run_uri, stage))
    if m is not None:
        return m
    known = list(stages_of(run_uri))
    if stage in _folders(run_uri):
        raise FileNotFoundError(f"stage {stage!r} of run {run_id!r} is not published (interrupted or running); "
                                f"published: {', '.join(known) or 'none'}")
    raise KeyError(f"run {run_id!r} has no stage {stage!r}; its stages: {', '.join(known) or 'none published yet'}")


def _scalar_rows(table: pa.Table) -> list[dict]:
    """Rows a script can read: wide per-clip arrays (embeddings) summarised as their length."""
    keep = [f.name for f in table.schema if not (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
                                                  or pa.types.is_fixed_size_list(f.type))
            or pa.types.is_string(f.type.value_type)]
    return table.select(keep).to_pylist()


def stage_info(cfg: PipelineConfig, run_id: str, stage: str, rows: int = 5) -> dict:
    """Summary, stats, error rows (id + reason) and the first ``rows`` good rows of one stage."""
    m = stage_manifest(cfg, run_id, stage)
    root = mf.run_root_of(m.uri)
    with storage.open_uri(m.data_uri, "rb") as fh:
        parquet = pq.ParquetFile(fh)
        names = parquet.schema_arrow.names
        key = [c for c in ID_COLUMNS if c in names][:1]
        errors = pa.table({})
        if "error" in names:
            errors = parquet.read(columns=key + ["error"])
            errors = errors.filter(pc.is_valid(errors.column("error")))
        sample = []
        for batch in parquet.iter_batches(batch_size=max(rows, 1) * 4 + len(errors)):
            head = mf.resolve_table(pa.Table.from_batches([batch]), root)
            if "error" in names:
                head = head.filter(pc.is_null(head.column("error")))
            sample += _scalar_rows(head.slice(0, rows - len(sample)))
            if len(sample) >= rows:
                break
    return {
        "run_id": run_id, "stage": stage, "uri": m.uri, "rows": m.row_count, "errors": m.error_count,
        "seconds": round(m.seconds, 3), "fingerprint": m.fingerprint, "config_hash": m.config_hash,
        "code_version": m.code_version, "stats": m.stats,
        "error_rows": errors.slice(0, MAX_ERROR_ROWS).to_pylist(), "sample_rows": sample[:rows],
    }


def describe_stage(cfg: PipelineConfig, run_id: str, stage: str, rows: int = 5) -> str:
    info = stage_info(cfg, run_id, stage, rows)
    out = [
        f"stage {stage} of run {run_id}: {info['rows']} rows, {info['errors']} errors, {info['seconds']:.1f}s",
        f"  uri: {info['uri']}",
        f"  fingerprint {info['fingerprint']}, config {info['config_hash']}, code {info['code_version']}",
    ]
    for key, value in sorted(info["stats"].items()):
        out.append(f"  {key}: {value}")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_colwidth", 60):
        if info["error_rows"]:
            shown = len(info["error_rows"])
            more = f", first {shown} shown" if shown < info["errors"] else ""
            out += [f"\nerror rows ({info['errors']}{more}):", pd.DataFrame(info["error_rows"]).to_string(index=False)]
        good = info["rows"] - info["errors"]
        sample = pd.DataFrame(info["sample_rows"])
        out += [f"\nsample rows ({len(sample)} of {good}):", sample.to_string(index=False)]
    return "\n".join(out)
