"""What the audit pages and ``reelflow audit status`` show, computed from the store (no web types here).

Every number is the gate's own evaluation (``infra.audit_store.evaluate``) under the sample's current
settings, so the page, the status command and the gate agree. A manual review (report 3.1,
``ManualFilter``) has no threshold: its numbers are the clips the dataset keeps (Good, or Bad for a
reason the dataset tolerates) and removes, next to what the published dataset actually holds.
"""

from __future__ import annotations

from infra import manifest as mf
from infra import storage
from infra.audit_store import (
    AuditSample,
    GateResult,
    VerdictStore,
    decide,
    evaluate,
    list_audits,
    load_result,
)
from infra.config_datasets import AuditConfig


def status_of(sample: AuditSample, state: GateResult) -> str:
    if not state.complete:
        return "pending"
    if sample.kind == "manual":
        return "complete"
    return "passed" if state.passed else "failed"


def dataset_kept(run_uri: str, dataset: str) -> int | None:
    """How many clips the published dataset keeps (its ``_SUCCESS.json``), or None before it is built."""
    manifest = mf.load_success(storage.join(run_uri, dataset))
    kept = manifest.stats.get("kept") if manifest is not None else None
    return int(kept) if isinstance(kept, (int, float)) else None


def audit_rows(run_uri: str) -> list[dict]:
    rows = []
    for sample in list_audits(run_uri):
        state = evaluate(sample, VerdictStore(run_uri, sample.audit_id).reviews())
        recorded = load_result(run_uri, sample.audit_id)
        rows.append({
            "sample": sample, "state": state, "status": status_of(sample, state),
            "tolerated": sum(state.tolerated.values()),
            # The run stopped here: its last evaluation failed (a rerun re-evaluates under new settings).
            "stopped": recorded is not None and recorded.complete and not recorded.passed,
            "kept": state.labelled - state.bad if sample.kind == "manual" else None,
            "dataset_kept": dataset_kept(run_uri, sample.dataset) if sample.kind == "manual" else None,
        })
    return rows


def clip_states(sample: AuditSample, reviews: dict[str, list], who: str) -> list[dict]:
    """Per sampled clip: its state under the rule, the deciding reason, this reviewer's own verdict,
    and every reviewer's verdict (so a disagreement is visible)."""
    out = []
    for clip in sample.clips:
        given = reviews.get(clip.clip_id, [])
        state, decider = decide(given, sample.tolerate) if given else (None, None)
        mine = next((v for v in given if v.reviewer == who), None)
        out.append({
            "clip_id": clip.clip_id, "caption": clip.caption, "category": clip.category,
            "verdict": state, "reason": decider.reason if decider is not None else None,
            "mine": mine.verdict if mine else None, "my_reason": mine.reason if mine else None,
            "reviews": [{"reviewer": v.reviewer, "verdict": v.verdict, "reason": v.reason, "note": v.note}
                        for v in given],
            "disagree": len({(v.verdict, v.reason) for v in given}) > 1,
        })
    return out


def pending_changes(sample: AuditSample, audit: AuditConfig | None) -> str | None:
    """What the given config would change at this gate on a rerun (None: nothing)."""
    gate = sample.gate.removesuffix("_manual") if sample.kind == "manual" else sample.gate
    if audit is None or gate not in audit.gates:
        return None
    tolerate = audit.gates[gate].tolerate
    threshold = sample.max_bad_rate if sample.kind == "manual" else audit.rate_and_threshold(gate)[1]
    diffs = ([f"max_bad_rate {sample.max_bad_rate:g} -> {threshold:g}"] if abs(threshold - sample.max_bad_rate) > 1e-12 else []) \
        + ([f"tolerate {sample.tolerate} -> {tolerate}"] if sorted(tolerate) != sorted(sample.tolerate) else [])
    return "; ".join(diffs) or None


def status_lines(run_uri: str, audit: AuditConfig | None = None) -> list[str]:
    """``reelflow audit status RUN``: one block per audit (gates, manual reviews, verdict counts,
    thresholds and outcome); with ``audit``, also what a rerun under that config would change."""
    rows = audit_rows(run_uri)
    if not rows:
        return ["no audit has opened in this run yet (a gate opens when the flow reaches it)"]
    lines = []
    for r in rows:
        s, st = r["sample"], r["state"]
        sim = " [SIMULATED from corpus truth]" if s.simulated else ""
        outcome = r["status"].upper() + (" (the run stopped here)" if r["stopped"] and r["status"] == "failed" else "")
        lines.append(f"{s.gate}{sim}: {outcome}   audit {s.audit_id}, dataset {s.dataset} ({s.population} clips)")
        if s.kind == "manual":
            held = "" if r["dataset_kept"] is None else f"; the published {s.dataset} keeps {r['dataset_kept']}"
            lines.append(f"  manual review of every clip: {st.labelled}/{st.total} labelled, kept {r['kept']} "
                         f"(Good or tolerated), removed {st.bad}{held}")
        else:
            lines.append(f"  {st.labelled}/{st.total} labelled, {st.bad} bad ({100 * st.bad_rate:.1f}%), "
                         f"threshold: below {100 * s.max_bad_rate:g}% (sample rate {s.sample_rate:g})")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(st.by_reason.items())) or "none"
        tolerated = ", ".join(f"{k} {v}" for k, v in sorted(st.tolerated.items())) or "none"
        lines.append(f"  bad by reason: {reasons}; tolerated ({', '.join(s.tolerate) or 'nothing'}): {tolerated}")
        if st.disagreements:
            lines.append(f"  reviewers disagree on {len(st.disagreements)} clips; a clip counts as bad when any "
                         "reviewer says bad")
        lines.extend(f"  changed: {c}" for c in s.changes)
        if (todo := pending_changes(s, audit)) is not None:
            lines.append(f"  this config differs ({todo}): a rerun re-evaluates the stored verdicts under it")
    return lines
