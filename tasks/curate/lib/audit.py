"""Human-in-the-loop audit gates (report section 3.1, Figure 3: "BadCase Rate" validation).

A gate samples a dataset (pre-training: 0.01% with bad cases < 15%; post-training: 0.1% with < 3%;
never fewer than ``min_sample`` clips so small runs still audit), waits until every sampled clip
has a verdict, then passes (bad/labelled below the threshold) or fails with a report by reason.

The wait polls the verdicts stored in the run's store (``infra.audit_store``) instead of using
Prefect's ``pause_flow_run(wait_for_input=...)``: with Prefect's ephemeral server (our default)
the API lives inside the flow's process, so a separate web app cannot submit the paused run's
input, and a killed flow's paused run is not picked up again by re-running the command (that is a
new flow run). The run's store outlives both: the sample is written once when the gate opens, each
verdict is one durable write, and re-running ``reelflow run`` re-enters the gate with the same
sample and every verdict already given. Pausing would add nothing but a second source of truth.

Modes: ``interactive`` (reviewers use ``reelflow audit serve``), ``file`` (pre-supplied
verdicts.json), ``simulated`` (synthetic corpus only: verdicts derived from the corpus truth,
labelled simulated in the audit id, every verdict, the MLflow run and every message).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time

import pandas as pd

from infra import manifest as mf
from infra import storage
from infra.audit_store import (
    RULE_TEXT,
    AuditSample,
    GateResult,
    SampledClip,
    Verdict,
    VerdictStore,
    audit_uri,
    decide,
    evaluate,
    load_result,
    load_sample,
    remove_stale_parts,
    save_result,
    save_sample,
)
from infra.audit_wait import AuditIncomplete, wait_for_labels  # noqa: F401 (AuditIncomplete: callers import it here)
from infra.config_datasets import AuditConfig
from infra.manifest import Manifest
from infra.stage import StageContext
from tasks.curate.lib.audit_next import ways_forward
from tasks.curate.lib.audit_simulated import DEFECT_REASON, NoTruth, clip_truth, simulated_verdict  # noqa: F401

log = logging.getLogger("reelflow.audit")

class AuditFailed(RuntimeError):
    """The bad-case rate is at or above the gate's threshold."""


def sample_size(population: int, rate: float, min_sample: int, max_sample: int) -> int:
    return min(population, max_sample, max(min_sample, math.ceil(rate * population)))


def _rank(seed: int, gate: str, clip_id: str) -> str:
    return hashlib.sha256(f"{seed}:{gate}:{clip_id}".encode()).hexdigest()


def members(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    held = df[f"in_{dataset}"].fillna(False).astype(bool) if f"in_{dataset}" in df.columns else pd.Series(False, df.index)
    if "error" in df.columns:
        held &= df["error"].isna()
    return df[held]


def draw_sample(df: pd.DataFrame, dataset: str, gate: str, n_rate: float, cfg: AuditConfig) -> tuple[pd.DataFrame, int]:
    pool = members(df, dataset)
    n = sample_size(len(pool), n_rate, cfg.min_sample, cfg.max_sample)
    order = sorted(pool.index, key=lambda i: _rank(cfg.seed, gate, str(pool.at[i, "clip_id"])))
    return pool.loc[order[:n]], len(pool)


def file_verdicts(path: str, gate: str) -> list[Verdict]:
    """``verdicts.json``: a list of verdicts, or ``{gate: [verdicts]}``; each needs clip_id, verdict
    (good/bad) and, when bad, a reason from the taxonomy."""
    data = json.loads(storage.read_text(path))
    items = data.get(gate, []) if isinstance(data, dict) else data
    return [Verdict.model_validate({"reviewer": os.path.basename(path), **v, "source": "file"}) for v in items]


def _truth(row: dict) -> dict:
    try:
        return clip_truth(row)
    except NoTruth as exc:
        raise AuditIncomplete(str(exc)) from None


def _new_sample(ctx: StageContext, cfg: AuditConfig, audit_id: str, gate: str, table: Manifest, picked: pd.DataFrame,
                population: int, save: bool = True, **fields) -> AuditSample:
    simulated = cfg.mode == "simulated"
    clips = []
    for row in picked.to_dict("records"):
        # Only a caption's category is the caption's claim; a zero-shot guess is not judged as one.
        category = row.get("category") if row.get("category_source") in (None, "caption") else None
        clips.append(SampledClip(  # the clip's path relative to the run root: the run can move
            clip_id=row["clip_id"], clip_uri=mf.relative_to(row.get("clip_uri"), ctx.run_uri), caption=row.get("caption_t2v"),
            category=category, truth=_truth(row) if simulated else None))
    if not save:
        return AuditSample.model_construct(clips=clips)
    sample = AuditSample(audit_id=audit_id, run_id=ctx.run_id, gate=gate, dataset_fingerprint=table.fingerprint,
                         mode=cfg.mode, simulated=simulated, population=population, clips=clips, **fields)
    save_sample(ctx.run_uri, sample)
    return sample


def _audit_id(cfg: AuditConfig, gate: str, dataset: Manifest) -> str:
    return f"{gate}-{dataset.fingerprint[:8]}" + ("-simulated" if cfg.mode == "simulated" else "")


def _follow_config(ctx: StageContext, sample: AuditSample, dataset: Manifest, rate: float, threshold: float,
                   tolerate: list[str], cfg: AuditConfig) -> AuditSample:
    """The stored sample under the gate's CURRENT settings: a changed threshold or tolerance applies to
    the verdicts already given (nothing is relabelled); a changed sample rate or size extends or trims
    the same seeded draw, so every verdict of a clip still sampled counts. Each change is logged and
    recorded in the sample."""
    changes = []
    if not math.isclose(sample.max_bad_rate, threshold):
        changes.append(f"max_bad_rate {sample.max_bad_rate:g} -> {threshold:g}")
    if sorted(sample.tolerate) != sorted(tolerate):
        changes.append(f"tolerate {sample.tolerate} -> {tolerate}")
    update: dict = {"max_bad_rate": threshold, "tolerate": list(tolerate)}
    if sample.kind != "manual":
        picked, population = draw_sample(mf.read_table(dataset), sample.dataset, sample.gate, rate, cfg)
        if [c.clip_id for c in sample.clips] != picked["clip_id"].tolist():
            changes.append(f"sample {len(sample.clips)} -> {len(picked)} clips (sample_rate {rate:g}, min_sample "
                           f"{cfg.min_sample}, max_sample {cfg.max_sample}; same seeded draw, verdicts kept)")
            update |= {"clips": _new_sample(ctx, cfg, sample.audit_id, sample.gate, dataset, picked, population,
                                            save=False).clips, "sample_rate": rate}
    if not changes:
        return sample
    sample = sample.model_copy(update=update | {"changes": [*sample.changes, f"{time.strftime('%Y-%m-%d %H:%M:%S')}: "
                                                            + "; ".join(changes)]})
    save_sample(ctx.run_uri, sample)
    log.warning("audit gate %s: settings changed since the sample was drawn (%s); re-evaluating the stored "
                "verdicts under them", sample.gate, "; ".join(changes))
    return sample


def open_audit(ctx: StageContext, cfg: AuditConfig, gate: str, dataset: Manifest) -> AuditSample:
    """The gate's sample, drawn once per (gate, dataset content, mode) and stored before any wait; a
    later call applies the gate's current threshold, tolerance and sample size to it."""
    audit_id = _audit_id(cfg, gate, dataset)
    rate, threshold = cfg.rate_and_threshold(gate)
    tolerate = cfg.gates[gate].tolerate
    existing = load_sample(ctx.run_uri, audit_id)
    if existing is not None:
        return _follow_config(ctx, existing, dataset, rate, threshold, tolerate, cfg)
    picked, population = draw_sample(mf.read_table(dataset), cfg.gates[gate].dataset, gate, rate, cfg)
    return _new_sample(ctx, cfg, audit_id, gate, dataset, picked, population, dataset=cfg.gates[gate].dataset,
                       kind=cfg.gates[gate].kind, sample_rate=rate, max_bad_rate=threshold, tolerate=tolerate)


def manual_review(ctx: StageContext, cfg: AuditConfig, name: str, base: str, source: Manifest) -> tuple[str, dict[str, Verdict]]:
    """ManualFilter (report 3.1: ``D_720p_sft = ManualFilter(D_540p_sft)``): reviewers label EVERY
    clip of ``base`` (an audit named ``{name}_manual`` in the web app; ``{name}_manual`` is also its key
    in a verdicts.json). Blocks until all are labelled; returns the audit id and each clip's verdict
    under the audit's rule (any reviewer's non-tolerated Bad removes the clip). The review tolerates what
    the gate of ``name`` tolerates, so its page counts what the dataset keeps. Simulated mode labels from
    the corpus truth, as at the gates. Audit mode off: no verdicts."""
    if cfg.mode == "off":
        log.warning("manual filter of %s skipped (audit mode off): no clip is marked Good", name)
        return "", {}
    gate = f"{name}_manual"
    audit_id = _audit_id(cfg, gate, source)
    tolerate = cfg.gates[name].tolerate if name in cfg.gates else []
    sample = load_sample(ctx.run_uri, audit_id)
    if sample is None:
        pool = members(mf.read_table(source), base)
        sample = _new_sample(ctx, cfg, audit_id, gate, source, pool, len(pool), dataset=name, kind="manual",
                             sample_rate=1.0, max_bad_rate=1.0, tolerate=tolerate)
    else:
        sample = _follow_config(ctx, sample, source, 1.0, 1.0, tolerate, cfg)
    store = VerdictStore(ctx.run_uri, audit_id)
    supply_verdicts(ctx, cfg, sample, store)
    wait_for_verdicts(ctx, cfg, sample, store)
    reviews = store.reviews()
    return audit_id, {c.clip_id: decide(reviews[c.clip_id], sample.tolerate)[1] for c in sample.clips}


def supply_verdicts(ctx: StageContext, cfg: AuditConfig, sample: AuditSample, store: VerdictStore) -> None:
    """Non-interactive modes: store the verdicts of clips that have none yet."""
    have = store.latest()
    if cfg.mode == "simulated":
        given = [simulated_verdict(c) for c in sample.clips]
    elif cfg.mode == "file":
        given = file_verdicts(cfg.verdicts_file, sample.gate)
    else:
        return
    wanted = {c.clip_id for c in sample.clips}
    for v in given:
        if v.clip_id in wanted and v.clip_id not in have:
            store.append(v)
            have[v.clip_id] = v
    missing = [c for c in wanted if c not in have]
    if missing and cfg.mode == "file":
        raise AuditIncomplete(
            f"audit gate {sample.gate}: {cfg.verdicts_file} has no verdict for {len(missing)} of {len(wanted)} sampled "
            f"clips (e.g. {sorted(missing)[:3]}); the sample is {audit_uri(ctx.run_uri, sample.audit_id)}/sample.json. "
            f"Add them to the file, or label them with: reelflow audit serve {ctx.run_id}")


def wait_for_verdicts(ctx: StageContext, cfg: AuditConfig, sample: AuditSample, store: VerdictStore) -> GateResult:
    return wait_for_labels(lambda: evaluate(sample, store.reviews()), f"audit gate {sample.gate}", "clips",
                           ctx.run_id, cfg, log)


def _log(ctx: StageContext, mode: str, sample: AuditSample, result: GateResult, store: VerdictStore) -> None:
    tags = {"reelflow.run_id": ctx.run_id, "reelflow.git_sha": ctx.code_version, "reelflow.profile": ctx.profile,
            "reelflow.audit_mode": mode, "reelflow.audit_simulated": str(sample.simulated).lower()}
    name = f"audit_{sample.gate}" + ("_simulated" if sample.simulated else "")
    try:
        with ctx.tracker.child(ctx.parent_run, name, tags) as rid:
            ctx.tracker.log_params(rid, {k: getattr(sample, k) for k in
                                         ("audit_id", "gate", "dataset", "kind", "sample_rate", "max_bad_rate")}
                                   | {"mode": mode, "tolerate": ", ".join(sample.tolerate) or "none", "rule": RULE_TEXT})
            metrics = {"bad_case_rate": result.bad_rate, "sampled": result.total, "labelled": result.labelled,
                       "bad": result.bad, "population": sample.population, "passed": float(result.passed)}
            ctx.tracker.log_metrics(rid, metrics | {f"bad.{k}": v for k, v in result.by_reason.items()}
                                    | {f"tolerated.{k}": v for k, v in result.tolerated.items()})
            ctx.tracker.log_metrics(ctx.parent_run, {f"bad_case_rate.{sample.gate}": result.bad_rate})
            rows = [v.model_dump() | {"simulated": sample.simulated} for vs in store.reviews().values() for v in vs]
            ctx.tracker.client.log_table(rid, data=pd.DataFrame(rows), artifact_file="verdicts.json")
            ctx.tracker.client.log_text(rid, result.model_dump_json(indent=1), "gate_result.json")
            if not result.passed:
                raise AuditFailed(result.summary())  # marks the gate's MLflow run FAILED
    except AuditFailed:
        pass


def audit_gate(ctx: StageContext, cfg: AuditConfig, gate: str, dataset: Manifest) -> Manifest:
    """Block until ``gate``'s sample of ``dataset`` is labelled; return ``dataset`` if it passes under the
    gate's current settings (a rerun with another threshold re-evaluates the stored verdicts)."""
    if cfg.mode == "off":
        log.warning("audit gate %s skipped (audit mode off)", gate)
        return dataset
    if gate not in cfg.gates:
        raise KeyError(f"audit gate {gate!r} is not configured (audit.gates); known: {', '.join(cfg.gates)}")
    for stale in remove_stale_parts(ctx.run_uri):
        log.info("removed a half-written audit record of a killed writer: %s", stale)
    sample = open_audit(ctx, cfg, gate, dataset)
    store = VerdictStore(ctx.run_uri, sample.audit_id)
    supply_verdicts(ctx, cfg, sample, store)
    result = wait_for_verdicts(ctx, cfg, sample, store)
    prior = load_result(ctx.run_uri, sample.audit_id)
    if prior is not None and prior.model_dump() == result.model_dump():
        log.warning("%s (recorded earlier)", result.summary())
    else:
        save_result(ctx.run_uri, result)
        _log(ctx, cfg.mode, sample, result, store)
    if not result.passed:
        lines = [f"  {b['clip_id']}: {b['reason']}" + (f" ({b['note']})" if b["note"] else "") for b in result.bad_clips]
        raise AuditFailed("\n".join([result.summary(), "bad cases:", *lines,
                                     f"verdicts: {audit_uri(ctx.run_uri, sample.audit_id)}",
                                     *ways_forward(ctx.run_id, ctx.profile, gate, result.bad_rate)]))
    if prior is None or prior.model_dump() != result.model_dump():
        log.warning(result.summary())
    return dataset
