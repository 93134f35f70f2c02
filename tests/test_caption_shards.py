"""The caption stage written by its workers (tasks/curate/caption.py, infra/shards.py): the same published
table and fingerprint as the rows gathered on the driver; the per-clip seconds counted from the workers'
timing parts; the fusion pool (``fuse.backend=vllm``) rewriting the captioner's shards."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra import manifest as mf
from infra import shards
from infra.config_caption import CaptionConfig
from infra.tables import CLIPS_SCHEMA
from infra.video import write_video
from models.caption_schema import StructuredCaption


def _clips(folder, n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        path = str(folder / f"clip{k}.mp4")
        # a coarse layout drifting over the frames: the camera-motion expert measures a pan, not noise
        big = np.kron(rng.integers(0, 255, (6, 12, 3)).astype(np.uint8), np.ones((18, 18, 1), np.uint8))
        write_video([np.ascontiguousarray(big[t:t + 90, 2 * t:2 * t + 160]) for t in range(14 + k % 3)], path, 12.0)
        rows.append({"source_id": f"s{k}", "source_uri": path, "shot_id": f"s{k}:0", "start_frame": 0,
                     "end_frame": 14 + k % 3, "fps": 12.0, "width": 160, "height": 90, "num_frames": 14 + k % 3,
                     "clip_id": f"c{k}", "clip_uri": path, "error": None, "media": "video"})
    rows[2].update(clip_uri=None, error="too short")  # a carried error row
    rows[4]["clip_uri"] = str(folder / "missing.mp4")  # an unreadable clip: an error row, not a failed stage
    return pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA)


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray

    from infra.config import load_config
    from infra.runtime import init_ray

    base = tmp_path_factory.mktemp("caption-shards")
    init_ray(load_config("tiny", [f"storage.run_root={base / 'runs'}", f"state_dir={base / 'state'}",
                                  "ray.num_cpus=2"]))
    yield
    ray.shutdown()


def _publish(result, tmp: str, final: str) -> mf.Manifest:
    return mf.publish(result, tmp, final, stage="caption", config_hash="c", inputs=[], code_version="t", started=0.0)


@pytest.mark.slow
def test_worker_shards_publish_the_same_caption_table_as_gathered_rows(ray_local, tmp_path):
    from tasks.curate.caption import caption_rows, caption_shards, output_schema
    from tasks.curate.lib.caption_report import TIMING, Totals

    table = _clips(tmp_path, 7)
    cfg = CaptionConfig(cache_dir=str(tmp_path / "models"), captioner={"string_cap": 8, "batch_size": 2},
                        resources={"actors": 1})
    rows, timing = caption_rows(table.to_pylist(), table.schema, cfg)
    gathered = _publish(pa.Table.from_pylist(rows, schema=output_schema(table.schema)),
                        mf.tmp_dir_for(str(tmp_path / "run" / "gathered")), str(tmp_path / "run" / "gathered"))

    final = str(tmp_path / "run" / "sharded")
    tmp = mf.tmp_dir_for(final)
    totals = Totals()
    handle = caption_shards(table, CaptionConfig.model_validate({**cfg.model_dump(), "resources": {"actors": 2}}), tmp,
                            totals)
    assert isinstance(handle, shards.Shards) and len(handle.counts) == 4  # shards of 2 clips, two actors
    assert not os.path.exists(os.path.join(tmp, TIMING))  # the timing parts are read and removed
    sharded = _publish(handle, tmp, final)
    assert sharded.fingerprint == gathered.fingerprint
    assert (sharded.row_count, sharded.error_count) == (gathered.row_count, gathered.error_count) == (7, 2)
    assert pq.read_table(sharded.data_uri).equals(pq.read_table(gathered.data_uri))
    assert sorted(os.listdir(final)) == sorted([mf.DATA_FILE, mf.SUCCESS])
    # the counts the driver summed from the workers' timing parts = those of the gathered rows
    ok = [r for r in rows if r["caption_json"] is not None]
    assert (totals.ok, totals.attempted) == (len(ok), sum("attempts" in t for t in timing)) == (5, 5)
    assert totals.first_try == sum(t.get("attempts") == 1 for t in timing) and totals.seconds["captioner"] > 0
    assert all(StructuredCaption.model_validate_json(r["caption_json"]) for r in ok)


def test_the_fusion_pool_rewrites_the_captioners_shards(tmp_path, monkeypatch):
    """fuse.backend=vllm over shards: each captioned row of a shard gets the LLM's captions, rows without a
    caption stay as they were, the shard keeps its rows and order. vLLM cannot run here: a stand-in module
    answers every chat."""
    from tasks.curate.caption import FuseShardWorker, output_schema

    engines = []

    class LLM:
        def __init__(self, model, seed):
            engines.append(model)

        def chat(self, chats, params, use_tqdm=False):
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"fused caption {i}")])
                    for i in range(len(chats))]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    caption = StructuredCaption.model_validate(
        {"subjects": [{"TYPES": {"type": "human", "sub_type": "woman"}, "appearance": "red coat", "action": "walks",
                       "expression": None, "position": "centre", "is_main_subject": True}],
         "shot_type": "long", "shot_angle": "eye level", "shot_position": "front", "camera_motion": {},
         "environment": "street", "lighting": "soft"})
    schema = output_schema(CLIPS_SCHEMA)
    rows = [{**dict.fromkeys(schema.names), "clip_id": f"c{k}", "error": None if k != 1 else "unreadable",
             "caption_json": caption.model_dump_json() if k != 1 else None,
             "category": caption.category if k != 1 else None} for k in range(3)]
    folder = str(tmp_path / "parts")
    shards.write_part(rows, schema, folder, 5)
    cfg = CaptionConfig(fuse={"backend": "vllm", "llm_path": "/models/fusion-llm"})
    worker = FuseShardWorker(cfg.model_dump(), folder, schema)
    assert engines == ["/models/fusion-llm"]
    (done,) = worker(5)
    assert done["fuse"] >= 0
    out = pq.read_table(shards.part_uri(folder, 5)).to_pylist()
    assert [r["clip_id"] for r in out] == ["c0", "c1", "c2"]
    assert [r["caption_t2v"] for r in out] == ["Fused caption 0.", None, "Fused caption 1."]
    assert out[1] == rows[1] and out[0]["caption_json"] == rows[0]["caption_json"]


def test_clip_batches_are_whole_captioner_batches_in_order():
    """Shards of whole captioner batches (so a shard's chunks are the batches the gathered path makes), about
    eight per actor, at most 32 clips rounded up to a whole batch; every row once, in order."""
    from tasks.curate.caption import clip_batches

    table = pa.table({"clip_id": [f"c{i}" for i in range(1000)], "error": pa.nulls(1000, pa.string())})
    for rows, actors, batch, size in ((100, 2, 8, 8), (100, 2, 1, 6), (1000, 2, 8, 32), (1000, 1, 64, 64), (7, 2, 2, 2)):
        batches = clip_batches(table.slice(0, rows), actors, batch)
        assert [len(b["clips"]) for b in batches[:-1]] == [size] * (len(batches) - 1)
        assert [b["index"] for b in batches] == list(range(len(batches)))
        assert [c["clip_id"] for b in batches for c in b["clips"]] == [f"c{i}" for i in range(rows)]
        assert all(b["names"] == ["clip_id", "error"] for b in batches)
