"""What the caption stage reports without holding its rows: per-clip seconds written by the workers beside
their shards, summed by the driver one part at a time; sample captions logged to MLflow.

A caption worker writes, for each shard of clip rows, one small timing part (``_caption_timing/part-<item>``):
whether the clip reached the captioner, whether it came out captioned, after how many attempts, and the
seconds of each part of the work. The driver streams those parts into the stage's metrics and removes them
before publishing (they are not part of the stage's output).
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from infra import storage
from infra.contact_sheet import contact_sheet
from infra.shards import Shards

TIMING = "_caption_timing"
PARTS = ("decode", "captioner", "shot", "camera_motion", "expression", "fuse")
TIMING_SCHEMA = pa.schema([pa.field("attempted", pa.bool_()), pa.field("ok", pa.bool_()),
                           pa.field("attempts", pa.int32())] + [pa.field(p, pa.float64()) for p in PARTS])


def timing_rows(pairs: list[dict]) -> list[dict]:
    """The worker's ``{"row", "timing"}`` pairs as rows of :data:`TIMING_SCHEMA`."""
    return [{"attempted": "attempts" in p["timing"], "ok": p["row"]["caption_json"] is not None,
             "attempts": p["timing"].get("attempts"), **{k: p["timing"].get(k, 0.0) for k in PARTS}} for p in pairs]


class Totals:
    """Counts and seconds summed over timing rows, fed a table at a time."""

    def __init__(self):
        self.attempted = self.ok = self.first_try = 0
        self.seconds = dict.fromkeys(PARTS, 0.0)

    def add(self, table: pa.Table) -> None:
        t = table.to_pydict()
        self.attempted += sum(t["attempted"])
        self.ok += sum(t["ok"])
        self.first_try += sum(ok and a == 1 for ok, a in zip(t["ok"], t["attempts"], strict=True))
        for p in PARTS:
            self.seconds[p] += sum(t[p])

    def add_parts(self, folder: str) -> None:
        """Every timing part under ``folder`` (then the folder is removed: nothing of it is published)."""
        if not storage.exists(folder):
            return
        for path in sorted(p for p in storage.list_files(folder) if p.endswith(".parquet")):
            with storage.open_uri(path, "rb") as fh:
                self.add(pq.read_table(fh, schema=TIMING_SCHEMA))
        storage.remove(folder)

    def metrics(self, seconds: float) -> dict:
        validity = self.ok / max(self.attempted, 1)
        return {"captioned": self.ok, "caption_errors": self.attempted - self.ok, "clips_per_s": self.ok / seconds,
                "validity_rate": validity, "first_attempt_validity": self.first_try / max(self.attempted, 1),
                **{f"seconds_{p}": s for p, s in self.seconds.items()}}


def categories(values) -> dict[str, int]:
    """Captioned clips per main-subject category, from ``{"caption_json", "category"}`` rows streamed."""
    counts: dict[str, int] = {}
    for r in values:
        if r["caption_json"] is not None:
            counts[r["category"]] = counts.get(r["category"], 0) + 1
    return counts


def sample_rows(shards: Shards, count: int) -> list[dict]:
    """The first ``count`` captioned rows (the columns the samples show), read a shard at a time."""
    taken: list[dict] = []
    columns = ["clip_id", "clip_uri", "category", "caption_json", "caption_t2v", "caption_i2v"]
    for table in shards.tables(columns) if count else ():
        taken += [r for r in table.to_pylist() if r["caption_json"] is not None][:count - len(taken)]
        if len(taken) >= count:
            break
    return taken


def log_samples(rows: list[dict], folder: str) -> list[str]:
    """Sample captions as JSON and markdown, and a contact sheet of the same clips (numbered)."""
    if not rows:
        return []
    samples = [{"n": n, "clip_id": r["clip_id"], "category": r["category"], "caption": json.loads(r["caption_json"]),
                "t2v": r["caption_t2v"], "i2v": r["caption_i2v"]} for n, r in enumerate(rows, 1)]
    as_json = os.path.join(folder, "sample_captions.json")
    with open(as_json, "w", encoding="utf-8") as fh:
        json.dump(samples, fh, indent=1)
    as_md = os.path.join(folder, "sample_captions.md")
    with open(as_md, "w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(f"## {s['n']}. `{s['clip_id']}` ({s['category']})\n\n**T2V:** {s['t2v']}\n\n**I2V:** {s['i2v']}\n\n"
                     f"```json\n{json.dumps(s['caption'], indent=1)}\n```\n\n")
    sheet = contact_sheet([(r["clip_uri"], None, f"{n}. {r['category']} / {json.loads(r['caption_json'])['shot_type']}")
                           for n, r in enumerate(rows, 1)], os.path.join(folder, "caption_contact_sheet.png"))
    return [as_json, as_md, sheet]
