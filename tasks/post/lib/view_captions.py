"""The T2V captions of a dataset view's member clips: the prompts the post-training stages sample from."""

from __future__ import annotations

from infra import manifest as mf
from infra.manifest import Manifest
from infra.tables import flag


def view_captions(dataset: Manifest, who: str, purpose: str) -> list[str]:
    """Distinct non-empty ``caption_t2v`` of the view's member clips without error, sorted (a seeded choice
    over them is then the same on every machine). ``who`` and ``purpose`` word the error of a view that has
    none, e.g. ("dpo-1", "to prompt with")."""
    rows = mf.read_table(dataset)
    if flag(dataset.stage) not in rows or "caption_t2v" not in rows:
        raise ValueError(f"{who}: {dataset.stage} is not a captioned dataset view (columns "
                         f"{flag(dataset.stage)!r} and 'caption_t2v' needed)")
    rows = rows[rows[flag(dataset.stage)].fillna(False).astype(bool) & rows["error"].isna()]
    found = sorted({c for c in rows["caption_t2v"] if isinstance(c, str) and c.strip()})
    if not found:
        raise ValueError(f"{who}: dataset {dataset.stage} has no captioned clip (caption_t2v) {purpose}")
    return found
