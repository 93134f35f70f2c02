"""The gate audits' side of the review store (``infra.review_store``): the sample of each dataset gate
or manual review, the gate's recorded result, and the counting rule.

Layout (``infra.review_store``, kind ``GATES``): ``{run_uri}/audits/{audit_id}/sample.json`` and
``verdicts/``, one durable file per verdict, plus ``result.json`` (the gate's last evaluation). Each
reviewer's latest verdict on a clip counts (a reviewer may change their mind; the full history stays);
when reviewers disagree, every verdict is kept and shown, and the gate counts the clip by ``RULE``.
Sample paths are stored relative to the run root, so a copied or moved run still finds its clips.
Imported by the web app (infra) and the gate (tasks), so it lives in infra.
"""

from __future__ import annotations

from infra import manifest as mf
from infra import storage
from infra.audit_models import (  # noqa: F401  (the store's records, re-exported for its callers)
    ID_RE,
    RULE,
    RULE_TEXT,
    STALE_PART_S,
    AuditSample,
    GateResult,
    Reason,
    SampledClip,
    Verdict,
    clean_text,
)
from infra.review_store import (  # noqa: F401  (one store for every kind of review; re-exported)
    GATES,
    RESULT,
    SAMPLE,
    VerdictStore,
    list_reviews,
    load_review,
    remove_stale_parts,
    review_uri,
    save_review,
    write_durably,
)

AUDITS = GATES.root
audit_uri = review_uri


def audits_uri(run_uri: str) -> str:
    return storage.join(run_uri, AUDITS)


def clip_location(run_uri: str, clip_uri: str | None) -> str | None:
    """Where a sampled clip is now: relative paths join the run root; an absolute path recorded by an
    older run that was copied or moved since is found by its part below the run's folder name."""
    if not clip_uri:
        return None
    if mf.is_relative(clip_uri):
        return mf.resolve(clip_uri, run_uri)
    marker = "/" + run_uri.rstrip("/").rsplit("/", 1)[-1] + "/"
    if not clip_uri.startswith(run_uri.rstrip("/") + "/") and marker in clip_uri:
        return storage.join(run_uri, clip_uri.rsplit(marker, 1)[-1])
    return clip_uri


def save_sample(run_uri: str, sample: AuditSample) -> None:
    save_review(run_uri, GATES, sample)


def load_sample(run_uri: str, audit_id: str) -> AuditSample | None:
    return load_review(run_uri, GATES, audit_id)


def save_result(run_uri: str, result: GateResult) -> None:
    write_durably(storage.join(audit_uri(run_uri, result.audit_id), RESULT), result.model_dump_json(indent=1))


def load_result(run_uri: str, audit_id: str) -> GateResult | None:
    uri = storage.join(audit_uri(run_uri, audit_id), RESULT)
    return GateResult.model_validate_json(storage.read_text(uri)) if storage.exists(uri) else None


def list_audits(run_uri: str) -> list[AuditSample]:
    return list_reviews(run_uri, GATES)


def decide(verdicts: list[Verdict], tolerate: list[str]) -> tuple[str, Verdict]:
    """One clip under ``RULE``: ("bad" | "tolerated" | "good", the verdict that decided it)."""
    bad = [v for v in verdicts if v.verdict == "bad" and v.reason not in tolerate]
    if bad:
        return "bad", bad[0]
    tolerated = [v for v in verdicts if v.verdict == "bad"]
    return ("tolerated", tolerated[0]) if tolerated else ("good", verdicts[-1])


def _as_lists(latest: dict) -> dict[str, list[Verdict]]:
    return {k: (v if isinstance(v, list) else [v]) for k, v in latest.items() if v}


def evaluate(sample: AuditSample, latest: dict) -> GateResult:
    """The gate's state: passes when every sampled clip is labelled and bad/total < max_bad_rate.
    ``latest``: clip -> verdict, or clip -> every reviewer's latest verdict (``VerdictStore.reviews``);
    a clip is bad by ``RULE``; bad verdicts whose reason the gate tolerates are counted apart."""
    reviews = _as_lists(latest)
    by_reason: dict[str, int] = {}
    tolerated: dict[str, int] = {}
    bad, tolerated_clips, disagreements, labelled = [], [], [], 0
    for clip in sample.clips:
        if clip.clip_id not in reviews:
            continue
        labelled += 1
        given = reviews[clip.clip_id]
        state, decider = decide(given, sample.tolerate)
        if state != "good":
            counts = by_reason if state == "bad" else tolerated
            counts[decider.reason] = counts.get(decider.reason, 0) + 1
            (bad if state == "bad" else tolerated_clips).append(decider)
        if len({(v.verdict, v.reason) for v in given}) > 1:
            disagreements.append({"clip_id": clip.clip_id, "counted": state, "verdicts": [
                {"reviewer": v.reviewer, "verdict": v.verdict, "reason": v.reason} for v in given]})
    complete = labelled == len(sample.clips)
    rate = len(bad) / labelled if labelled else 0.0

    def listed(vs: list[Verdict]) -> list[dict]:
        return [{"clip_id": v.clip_id, "reason": v.reason, "note": v.note, "reviewer": v.reviewer} for v in vs]

    return GateResult(
        audit_id=sample.audit_id, gate=sample.gate, total=len(sample.clips), labelled=labelled, bad=len(bad),
        bad_rate=rate, max_bad_rate=sample.max_bad_rate, complete=complete,
        passed=complete and rate < sample.max_bad_rate, simulated=sample.simulated, by_reason=by_reason,
        tolerated=tolerated, bad_clips=listed(bad), tolerate=list(sample.tolerate), tolerated_clips=listed(tolerated_clips),
        disagreements=disagreements,
    )
