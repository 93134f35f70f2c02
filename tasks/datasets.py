"""Datasets: threshold profiles turn one scored pool into D_256p, D_360p, D_540p, D_540p_sft, D_720p_sft.

Report section 3.1: ``D_256p = pool.filter(loose)``, ``D_360p = pool.filter(medium)``,
``D_540p = pool.filter(strict)``, ``D_540p_sft = QualityFilter(D_post)``,
``D_720p_sft = ManualFilter(D_540p_sft)``: for a ``manual`` spec, reviewers label every clip of the
base (:func:`tasks.audit.manual_review`) and their verdicts become ``manual_good`` (1 Good, 0 Bad,
null = not reviewed) and ``manual_reason``, which the ``manual`` profile reads. A dataset is a VIEW
(DESIGN.md section 4): every row of its input is kept and gets

- ``rejected_by``: names of every rule the clip fails (empty = in the dataset); ``error`` for an
  error row, ``not_in_<base>`` when the base dataset (e.g. D_post) does not hold it;
- ``rejected_detail``: the same, with the score and the threshold (what :func:`why_not` prints);
- ``in_<dataset>``: the membership flag; flags of earlier datasets are carried along.

A null score means the filter was off for the run (the score stage never leaves one null on a
good row otherwise): by default it passes the rule, as in ``tasks.filters.rejects``; a profile with
``missing: reject`` rejects it instead (``rule (column=missing, ...)``).
"""

from __future__ import annotations

import hashlib
import math
import operator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from infra import manifest as mf
from infra import storage
from infra.audit_store import Verdict
from infra.config import ConfigError, PipelineConfig
from infra.config_datasets import (
    AuditConfig,
    DatasetsConfig,
    DatasetStageConfig,
    Rule,
    ThresholdProfile,
    dataset_stage_config,
)
from infra.manifest import Manifest
from infra.stage import StageContext, StageWork, run_stage
from tasks.audit import manual_review

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
VIEW_COLUMNS = ("rejected_by", "rejected_detail", "crop_box")


def flag(dataset: str) -> str:
    return f"in_{dataset}"


def resolve_column(rule: Rule, columns: dict[str, str], df: pd.DataFrame) -> str:
    actual = columns.get(rule.column, rule.column)
    if actual not in df.columns:
        scores = sorted(c for c in df.columns if c.startswith("score_"))
        raise ConfigError(
            f"rule {rule.name!r} needs {rule.column!r} (column {actual!r}), which the pool does not have; "
            f"score columns present: {', '.join(scores) or 'none'}. Map the name in configs/filters/columns.yaml "
            "or fix the profile."
        )
    return actual


def _fmt(value: float) -> str:
    return "missing" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def apply_profile(
    df: pd.DataFrame,
    profile: ThresholdProfile,
    columns: dict[str, str],
    pipeline_profile: str = "tiny",
    base: str | None = None,
) -> tuple[list[list[str]], list[list[str]]]:
    """(rejected_by, rejected_detail) per row of ``df``; pure, no I/O."""
    n = len(df)
    names: list[list[str]] = [[] for _ in range(n)]
    details: list[list[str]] = [[] for _ in range(n)]
    if "error" in df.columns:
        for i in np.flatnonzero(df["error"].notna().to_numpy()):
            names[i].append("error")
            details[i].append(f"error row: {df['error'].iloc[i]}")
    if base is not None:
        held = df[flag(base)].fillna(False).astype(bool).to_numpy() if flag(base) in df.columns else np.zeros(n, bool)
        for i in np.flatnonzero(~held):
            names[i].append(f"not_in_{base}")
            details[i].append(f"not in {base}")
    for rule in (r for r in profile.rules if pipeline_profile not in r.off_in):
        column = resolve_column(rule, columns, df)
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
        threshold = rule.threshold(pipeline_profile)
        with np.errstate(invalid="ignore"):
            keep = OPS[rule.op](values, threshold) | (np.isnan(values) & (profile.missing == "pass"))
        for i in np.flatnonzero(~keep):
            names[i].append(rule.name)
            details[i].append(f"{rule.name} ({column}={_fmt(values[i])}, needs {rule.op} {threshold:g})")
    return names, details


def build_view(df: pd.DataFrame, cfg: DatasetStageConfig) -> pd.DataFrame:
    """The dataset table: ``df`` (earlier view columns dropped) + rejected_by/detail + in_ flag."""
    out = df.drop(columns=[c for c in VIEW_COLUMNS if c in df.columns]).reset_index(drop=True)
    names, details = apply_profile(out, cfg.profile, cfg.columns, cfg.pipeline_profile, cfg.base)
    out["rejected_by"] = names
    out["rejected_detail"] = details
    out[flag(cfg.dataset)] = [not r for r in names]
    if cfg.profile.crop_borders:
        # Border crop (report 3.1, strict profile): clips are re-cut inside the picture box.
        crop = cfg.columns.get("border_crop", "border_crop")
        out["crop_box"] = out[crop] if crop in out.columns else None
    return out


def add_verdicts(df: pd.DataFrame, verdicts: dict[str, Verdict]) -> pd.DataFrame:
    """``manual_good`` / ``manual_reason`` from the manual review (null where a clip has no verdict)."""
    found = df["clip_id"].map(verdicts)
    df = df.assign(manual_good=found.map(lambda v: None if not isinstance(v, Verdict) else float(v.verdict == "good")),
                   manual_reason=found.map(lambda v: v.reason if isinstance(v, Verdict) else None))
    df["manual_good"] = df["manual_good"].astype(float)
    return df


def tolerate(verdicts: dict[str, Verdict], reasons: list[str]) -> dict[str, Verdict]:
    """A Bad verdict whose reason the profile tolerates at this gate keeps the clip (tiny: "wrong caption",
    its captioner being random); the verdict itself stays on record in the review."""
    out = {}
    for clip_id, v in verdicts.items():
        if v.verdict == "bad" and v.reason in reasons:
            v = v.model_copy(update={"verdict": "good", "note": f"{v.note or ''}; {v.reason} tolerated by the profile"})
        out[clip_id] = v
    return out


def verdicts_digest(verdicts: dict[str, Verdict]) -> str:
    text = "\n".join(f"{c}:{v.verdict}:{v.reason}" for c, v in sorted(verdicts.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rule_counts(view: pd.DataFrame, profile: ThresholdProfile) -> dict[str, dict[str, int]]:
    """Per rule: clips it rejects, and clips ONLY it rejects (what loosening it alone would add)."""
    counts = {}
    for rule in profile.rules:
        hits = view["rejected_by"].map(lambda r, n=rule.name: n in r)
        alone = view["rejected_by"].map(lambda r, n=rule.name: list(r) == [n])
        counts[rule.name] = {"rejected": int(hits.sum()), "only": int(alone.sum())}
    return counts


def why_record(table: pa.Table, dataset: str, clip_id: str) -> dict:
    """Is ``clip_id`` (or a unique prefix of it) in ``dataset``, and if not, why: a dict with ``status``
    (in / out / unknown / ambiguous), ``clip_id``, ``reasons`` and the one ``line`` people read.
    ``table`` needs ``clip_id``, ``in_<dataset>`` and ``rejected_detail`` or ``rejected_by``; the match is
    an Arrow kernel over the id column, so only the matching row is ever turned into Python."""
    ids = pc.cast(table.column("clip_id"), pa.string())
    hits = table.filter(pc.fill_null(pc.equal(ids, clip_id), False))
    if hits.num_rows == 0 and clip_id:
        hits = table.filter(pc.fill_null(pc.starts_with(ids, clip_id), False))
    out = {"dataset": dataset, "query": clip_id, "clip_id": None, "reasons": []}
    if hits.num_rows == 0:
        return {**out, "status": "unknown",
                "line": f"clip {clip_id} is not in {dataset}: no such clip_id among its {table.num_rows} pool rows"}
    if hits.num_rows > 1:
        return {**out, "status": "ambiguous", "line": f"clip id prefix {clip_id!r} is ambiguous in {dataset}: "
                f"{hits.num_rows} clips match, give more characters"}
    row = hits.slice(0, 1).to_pylist()[0]
    cid = row["clip_id"]
    if bool(row.get(flag(dataset)) or False):
        return {**out, "clip_id": cid, "status": "in",
                "line": f"clip {cid} is in {dataset}: it passes every rule of the profile"}
    details = _as_list(row.get("rejected_detail")) or _as_list(row.get("rejected_by"))
    reason = "; ".join(details) if details else "no rule recorded (was the table built by tasks.datasets?)"
    return {**out, "clip_id": cid, "status": "out", "reasons": details,
            "line": f"clip {cid} is not in {dataset}: {reason}"}


def why_not(manifest_df: pd.DataFrame | pa.Table, dataset: str, clip_id: str) -> str:
    """One line: is ``clip_id`` (or a unique prefix of it) in ``dataset``, and if not, why."""
    table = manifest_df if isinstance(manifest_df, pa.Table) else pa.Table.from_pandas(
        manifest_df[[c for c in ("clip_id", flag(dataset), "rejected_detail", "rejected_by") if c in manifest_df]],
        preserve_index=False)
    return why_record(table, dataset, clip_id)["line"]


def why_in_run(cfg: PipelineConfig, run_id: str, dataset: str, clip_id: str) -> dict:
    """``reelflow inspect RUN D_540p --why CLIP_ID``: reads four columns of the dataset's Parquet, not the table."""
    uri = storage.join(storage.normalize(cfg.storage.run_root), run_id, dataset)
    manifest = mf.load_success(uri)
    if manifest is None:
        raise FileNotFoundError(f"dataset {dataset!r} of run {run_id!r} is not published (no {mf.SUCCESS} in {uri})")
    with storage.open_uri(manifest.data_uri, "rb") as fh:
        parquet = pq.ParquetFile(fh)
        names = parquet.schema_arrow.names
        if "rejected_by" not in names:
            raise FileNotFoundError(f"stage {dataset!r} is not a dataset (no rejected_by column); --why needs D_256p, "
                                    "D_540p, ...")
        wanted = [c for c in ("clip_id", flag(dataset), "rejected_detail", "rejected_by") if c in names]
        table = parquet.read(columns=wanted)
    return why_record(table, dataset, clip_id)


def why_not_in_run(cfg: PipelineConfig, run_id: str, dataset: str, clip_id: str) -> str:
    return why_in_run(cfg, run_id, dataset, clip_id)["line"]


def _as_list(value) -> list[str]:
    return [] if value is None or (isinstance(value, float) and math.isnan(value)) else [str(v) for v in value]


def run(ctx: StageContext, cfg: DatasetStageConfig, pool: Manifest,
        verdicts: dict[str, Verdict] | None = None) -> Manifest:
    """Stage ``<dataset>``: the pool (or the base dataset's table) viewed through ``cfg.profile``;
    ``verdicts``: a manual review's (``cfg.review``), joined as ``manual_good`` before the rules."""

    def body(work: StageWork) -> pa.Table:
        df = mf.read_table(pool)
        if cfg.base is not None and flag(cfg.base) not in df.columns:
            raise ConfigError(f"{cfg.dataset} filters {cfg.base}, but input {pool.stage!r} has no {flag(cfg.base)}")
        if verdicts is not None:
            df = add_verdicts(df, verdicts)
            work.stats.update(review=cfg.review, reviewed=len(verdicts),
                              marked_good=sum(v.verdict == "good" for v in verdicts.values()))
        view = build_view(df, cfg)
        if verdicts is not None:  # the reviewer's reason beside the rule that read the verdict
            view["rejected_detail"] = [[f"{d}, reviewer: {r}" if r and "manual_good=" in d else d for d in ds]
                                       for ds, r in zip(view["rejected_detail"], view["manual_reason"], strict=True)]
        kept = int(view[flag(cfg.dataset)].sum())
        counts = rule_counts(view, cfg.profile)
        work.metrics.update(kept=kept, rejected=len(view) - kept, kept_share=kept / max(len(view), 1))
        for name, c in counts.items():
            work.metrics[f"rejected.{name}"] = c["rejected"]
            work.metrics[f"rejected_only.{name}"] = c["only"]
        work.stats.update(dataset=cfg.dataset, profile=cfg.profile.name, kept=kept, rules=counts)
        return pa.Table.from_pandas(view, preserve_index=False)

    return run_stage(ctx, cfg.dataset, cfg, [pool], body)


def build_dataset(ctx: StageContext, cfg: DatasetsConfig, name: str, source: Manifest,
                  audit_cfg: AuditConfig | None = None) -> Manifest:
    """``D_<name> = source.filter(profile)`` for the flows: resolves the spec and its profile; a
    manual spec first waits for its review (``audit_cfg``'s mode: interactive, file or simulated)."""
    specs = {s.name: s for s in cfg.specs}
    if name not in specs:
        raise ConfigError(f"dataset {name!r} is not configured; known: {', '.join(specs)}")
    spec = specs[name]
    stage_cfg = dataset_stage_config(spec, cfg, ctx.profile)
    if not spec.manual:
        return run(ctx, stage_cfg, source)
    audit_cfg = audit_cfg or AuditConfig()
    review, verdicts = manual_review(ctx, audit_cfg, name, spec.base, source)
    gate = audit_cfg.gates.get(name)
    verdicts = tolerate(verdicts, gate.tolerate if gate else [])
    stage_cfg = stage_cfg.model_copy(update={"review": review or None, "review_digest": verdicts_digest(verdicts)})
    return run(ctx, stage_cfg, source, verdicts)
