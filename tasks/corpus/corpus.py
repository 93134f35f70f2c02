"""Stage ``corpus``: the synthetic film corpus as a pipeline stage (demo input when no --input).

Films render in parallel on Ray (one film per task); mp4 + truth files land in the stage's
temporary folder and are published with it, so a crash never leaves half a corpus.
"""

from __future__ import annotations

import os
import tempfile

import pyarrow as pa

from infra import storage
from infra.config import CorpusConfig
from infra.manifest import Manifest
from infra.raydata import flat_map_items
from infra.stage import StageContext, StageWork, run_stage
from tasks.corpus.lib.films import generate_video, video_id_for, video_seed_for

CORPUS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("truth_uri", pa.string()),
        ("num_frames", pa.int64()),
        ("num_shots", pa.int64()),
        ("num_cuts", pa.int64()),
        ("num_gradual", pa.int64()),
        ("num_defects", pa.int64()),
        ("error", pa.string()),
    ]
)


class CorpusWorker:
    def __init__(self, cfg: dict, write_dir: str, final_dir: str):
        self.cfg = CorpusConfig.model_validate(cfg)
        self.write_dir, self.final_dir = write_dir, final_dir

    def __call__(self, item: dict) -> list[dict]:
        vid = video_id_for(item["index"])
        seed = video_seed_for(self.cfg.seed, item["index"])
        if storage.is_remote(self.write_dir):  # an S3 run root: render locally, upload the film and its truth
            with tempfile.TemporaryDirectory(prefix="reelflow-corpus-") as local:
                truth = generate_video(vid, seed, self.cfg, local)
                for name in (f"{vid}.mp4", f"{vid}.truth.json"):
                    storage.upload(os.path.join(local, name), storage.join(self.write_dir, name))
        else:
            truth = generate_video(vid, seed, self.cfg, self.write_dir)
        cuts = sum(t.kind == "cut" for t in truth.transitions)
        return [
            {
                "video_id": vid,
                "uri": storage.join(self.final_dir, f"{vid}.mp4"),
                "truth_uri": storage.join(self.final_dir, f"{vid}.truth.json"),
                "num_frames": truth.num_frames,
                "num_shots": len(truth.shots),
                "num_cuts": cuts,
                "num_gradual": len(truth.transitions) - cuts,
                "num_defects": len(truth.defects),
                "error": None,
            }
        ]


def run(ctx: StageContext, cfg: CorpusConfig) -> Manifest:
    def body(work: StageWork) -> pa.Table:
        items = [{"index": i} for i in range(cfg.videos)]
        table = flat_map_items(items, CorpusWorker, {"cfg": cfg.model_dump(), "write_dir": work.tmp_uri,
                                                     "final_dir": work.final_uri}, CORPUS_SCHEMA,
                               cfg.resources, stage="corpus")
        frames = sum(table.column("num_frames").to_pylist())
        work.metrics.update(videos=table.num_rows, frames=frames,
                            boundaries=sum(table.column("num_cuts").to_pylist()) + sum(table.column("num_gradual").to_pylist()))
        work.stats.update(videos=table.num_rows, frames=frames)
        return table

    return run_stage(ctx, "corpus", cfg, [], body)
