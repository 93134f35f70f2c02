"""Simulated audit verdicts (``--audit simulated``): what a reviewer would say, read from the synthetic
corpus truth. Only the generated corpus has a truth, so this mode refuses real footage; every verdict
it makes says it is simulated (reviewer, source and note)."""

from __future__ import annotations

from infra import storage
from infra.audit_store import SampledClip, Verdict
from tasks.corpus.lib.truth import VideoTruth, truth_path

# Planted defect kind -> the report's bad-case taxonomy. A channel logo is a burned-in mark (text,
# as OCR reads it). Borders are absent: the strict profile crops them away. Near-duplicates are absent: the kept copy of a group is a good clip.
DEFECT_REASON = {
    "black": "black", "frozen": "static", "subtitle": "text", "caption_text": "text", "mosaic": "mosaic",
    "sticker": "effects/stickers", "logo": "text", "blur": "low quality", "noise": "low quality",
    "blocking": "low quality",
}


class NoTruth(RuntimeError):
    """The clip's source has no corpus truth (not the synthetic corpus)."""


def clip_truth(row: dict) -> dict:
    """What the synthetic corpus truth says a reviewer would see in this clip (simulated mode)."""
    uri = truth_path(row["source_uri"]) if row.get("source_uri") else None
    if uri is None or not storage.exists(uri):
        raise NoTruth(
            f"--audit simulated needs the synthetic corpus truth, but {uri} does not exist: simulated verdicts "
            "exist only for the generated corpus; use --audit verdicts.json or a real audit")
    truth = VideoTruth.model_validate_json(storage.read_text(uri))
    a, b = int(row["start_frame"]), int(row["end_frame"])
    defects = sorted({DEFECT_REASON[d.kind] for d in truth.defects if d.kind in DEFECT_REASON
                      and d.start_frame < b and d.end_frame > a})
    boundary = any((t.start_frame < b and t.end_frame > a) if t.is_gradual else a < t.start_frame < b
                   for t in truth.transitions)
    shots = [s for s in truth.shots if s.start_frame < b and s.end_frame > a]
    return {"reasons": defects, "boundary_inside": boundary,
            "category": max(shots, key=lambda s: min(s.end_frame, b) - max(s.start_frame, a)).category if shots else None}


def simulated_verdict(clip: SampledClip) -> Verdict:
    truth = clip.truth or {}
    reasons = list(truth.get("reasons", []))
    note = "simulated from corpus truth"
    if truth.get("boundary_inside"):
        reasons.append("other")
        note += "; a shot boundary lies inside the clip"
    if not reasons and clip.category and truth.get("category") and clip.category.lower() != truth["category"]:
        reasons.append("wrong caption")
    if reasons:
        return Verdict(clip_id=clip.clip_id, verdict="bad", reason=reasons[0], note=f"{note}: {', '.join(reasons)}",
                       reviewer="simulated", source="simulated")
    return Verdict(clip_id=clip.clip_id, verdict="good", note=note, reviewer="simulated", source="simulated")
