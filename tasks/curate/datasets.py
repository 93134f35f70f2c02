"""Datasets: threshold profiles turn one scored pool into D_256p, D_360p, D_540p, D_540p_sft, D_720p_sft.

Report section 3.1: ``D_256p = pool.filter(loose)``, ``D_360p = pool.filter(medium)``,
``D_540p = pool.filter(strict)``, ``D_540p_sft = QualityFilter(D_post)``,
``D_720p_sft = ManualFilter(D_540p_sft)``: for a ``manual`` spec, reviewers label every clip of the
base (:func:`tasks.curate.lib.audit.manual_review`) and their verdicts become ``manual_good`` (1 Good, 0 Bad,
null = not reviewed) and ``manual_reason``, which the ``manual`` profile reads. A dataset is a VIEW
(docs/architecture.md, "The data model"): every row of its input is kept and gets

- ``rejected_by``: names of every rule the clip fails (empty = in the dataset); ``error`` for an
  error row, ``not_in_<base>`` when the base dataset (e.g. D_post) does not hold it;
- ``rejected_detail``: the same, with the score and the threshold (what :func:`why_not` prints);
- ``in_<dataset>``: the membership flag; flags of earlier datasets are carried along.

A null score means the filter was off for the run (the score stage never leaves one null on a
good row otherwise): by default it passes the rule, as in ``tasks.curate.filters.rejects``; a profile with
``missing: reject`` rejects it instead (``rule (column=missing, ...)``).
"""

from __future__ import annotations

import hashlib
import math
import operator

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from infra import manifest as mf
from infra import storage
from infra.audit_store import Verdict
from infra.config import ConfigError, PipelineConfig, models_profile
from infra.config_datasets import (
    AuditConfig,
    DatasetsConfig,
    DatasetStageConfig,
    ThresholdProfile,
    dataset_stage_config,
)
from infra.manifest import Manifest
from infra.stage import StageContext, StageWork, run_stage
from tasks.curate.lib.audit import manual_review
from tasks.curate.lib.dataset_view import (  # noqa: F401
    VIEW_COLUMNS,
    add_verdicts,
    failures,
    flag,
    read_pool,
    rejection_lists,
    view_table,
)

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)


def apply_profile(
    df: pd.DataFrame,
    profile: ThresholdProfile,
    columns: dict[str, str],
    pipeline_profile: str = "tiny",
    base: str | None = None,
) -> tuple[list[list[str]], list[list[str]]]:
    """(rejected_by, rejected_detail) per row of ``df``; pure, no I/O."""
    names, matrix, details = failures(_arrow(df), profile, columns, pipeline_profile, base, OPS)
    by, detail = rejection_lists(names, matrix, details)
    return by.to_pylist(), detail.to_pylist()


def build_view(df: pd.DataFrame, cfg: DatasetStageConfig) -> pd.DataFrame:
    """The dataset table: ``df`` (earlier view columns dropped) + rejected_by/detail + in_ flag
    (computed over Arrow by :func:`tasks.curate.lib.dataset_view.view_table`, what the stage runs)."""
    return mf.to_pandas(view_table(_arrow(df), cfg, OPS)[0])


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
    reason = "; ".join(details) if details else "no rule recorded (was the table built by tasks.curate.datasets?)"
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
        table = read_pool(pool)  # Arrow all the way: no pandas copy of the pool, no wide arrays
        if cfg.base is not None and flag(cfg.base) not in table.column_names:
            raise ConfigError(f"{cfg.dataset} filters {cfg.base}, but input {pool.stage!r} has no {flag(cfg.base)}")
        if verdicts is not None:
            table = add_verdicts(table, verdicts)
            work.stats.update(review=cfg.review, reviewed=len(verdicts),
                              marked_good=sum(v.verdict == "good" for v in verdicts.values()))
        view, counts = view_table(table, cfg, OPS)
        kept = int(pc.sum(view.column(flag(cfg.dataset))).as_py() or 0)
        work.metrics.update(kept=kept, rejected=view.num_rows - kept, kept_share=kept / max(view.num_rows, 1))
        for name, c in counts.items():
            work.metrics[f"rejected.{name}"] = c["rejected"]
            work.metrics[f"rejected_only.{name}"] = c["only"]
        work.stats.update(dataset=cfg.dataset, profile=cfg.profile.name, kept=kept, rules=counts)
        return view

    return run_stage(ctx, cfg.dataset, cfg, [pool], body)


def build_dataset(ctx: StageContext, cfg: DatasetsConfig, name: str, source: Manifest,
                  audit_cfg: AuditConfig | None = None) -> Manifest:
    """``D_<name> = source.filter(profile)`` for the flows: resolves the spec and its profile; a
    manual spec first waits for its review (``audit_cfg``'s mode: interactive, file or simulated)."""
    specs = {s.name: s for s in cfg.specs}
    if name not in specs:
        raise ConfigError(f"dataset {name!r} is not configured; known: {', '.join(specs)}")
    spec = specs[name]
    stage_cfg = dataset_stage_config(spec, cfg, models_profile(ctx.profile))
    if not spec.manual:
        return run(ctx, stage_cfg, source)
    audit_cfg = audit_cfg or AuditConfig()
    review, verdicts = manual_review(ctx, audit_cfg, name, spec.base, source)
    gate = audit_cfg.gates.get(name)
    verdicts = tolerate(verdicts, gate.tolerate if gate else [])
    stage_cfg = stage_cfg.model_copy(update={"review": review or None, "review_digest": verdicts_digest(verdicts)})
    return run(ctx, stage_cfg, source, verdicts)
