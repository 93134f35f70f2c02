"""Table stages from 10k to 1M clips: does cost grow no faster than the work?

``python -m benchmarks.scale`` writes ``benchmarks/results/scale.json``. Per size, a synthetic clip table
with the real schema (the caption stage's output: clip table + every score column + captions, 45
columns; the near-duplicate embeddings live in the side store, as the score stage writes them) goes
through the six dataset views (D_256p, D_360p, D_540p, D_post = concept balance, D_540p_sft,
D_720p_sft with a manual review of 2,000 clips), near-duplicate grouping over the side store's mean
signatures (2% of clips planted as re-uploads), and ``inspect --why``. Each size runs in a fresh process;
per phase: wall time, CPU time, peak RSS and its increment over the phase's start (sampled every 20 ms).
The log-log slope of time and of peak-memory increment against clip count is fitted over the sizes.

The full comparison of screened near-duplicate pairs uses embeddings made on demand from each clip's
mean (4 crops x 11 frames x 144 cells, the production shape): its cost is measured, reading 6,300
floats per clip from the side store is not (25 GB at 1M clips does not fit this machine's disk budget).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SIZES = (10_000, 100_000, 1_000_000)
DIM, FRAMES, SCALES = 144, 11, 4
DUP_SHARE = 0.02
CAPTION_VARIANTS = 500


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.char.mod("%016x", rng.integers(0, 2**62, n, dtype=np.int64)).astype(object)


def clip_table(n: int, seed: int = 0) -> pa.Table:
    """``n`` rows of the caption stage's schema, defects on a minority as in tests/synthetic_pool.py."""
    from models.balance import draw_categories
    from tasks.curate.caption import output_schema
    from tasks.curate.score import SCORED_SCHEMA

    schema = output_schema(SCORED_SCHEMA)
    rng = np.random.default_rng(seed)
    ids = _hex_ids(rng, n)
    src = np.char.mod("film_%06d", np.arange(n) // 25).astype(object)
    frames = rng.integers(24, 240, n)

    def spiky(share, lo, hi):
        return np.where(rng.random(n) < share, rng.uniform(lo, hi, n), 0.0)

    keep = rng.random(n) > 0.03
    cols = {
        "clip_id": ids, "source_id": src, "source_uri": src + ".mp4", "shot_id": src + ":0",
        "start_frame": np.zeros(n, np.int64), "end_frame": frames, "fps": np.full(n, 24.0),
        "width": np.full(n, 320, np.int32), "height": np.full(n, 180, np.int32), "num_frames": frames,
        "clip_uri": "clips/" + ids + ".mp4", "media": np.full(n, "video", object),
        "error": np.where(rng.random(n) < 0.005, "film.mp4: truncated file", None).astype(object),
        "score_duration_s": frames / 24.0,
        "score_resolution": rng.choice([144, 180, 360, 540, 720, 1080], n).astype(np.int32),
        "score_fps": np.full(n, 24.0), "score_black_s": spiky(0.08, 0.04, 2.0), "score_static_s": spiky(0.08, 0.1, 3),
        "score_mosaic": spiky(0.05, 0.01, 0.5), "score_text": spiky(0.15, 0.1, 1), "score_subtitle": spiky(0.08, 0.1, 1),
        "score_logo": spiky(0.05, 0.3, 1), "score_border": spiky(0.1, 0.1, 0.5), "score_sticker": spiky(0.05, 0.01, 0.3),
        "score_aesthetic": rng.normal(5, 1, n).clip(0, 10), "score_motion": rng.lognormal(np.log(0.05), 1.2, n),
        "score_iqa": rng.beta(5, 2, n), "score_vqa": rng.beta(5, 2, n), "score_vtss": rng.beta(5, 2, n),
        "score_dup": rng.random(n), "dup_group": ids, "dup_keep": keep,
        "score_timing": np.full(n, '{"decode": 0.0123, "text": 0.0871, "aesthetic": 0.0101}', object),
        "category": np.asarray(draw_categories(n, seed=seed), object),
    }
    variant = rng.integers(0, CAPTION_VARIANTS, n)
    t2v = np.asarray([f"A wide shot of a person walking through scene {v} at dusk, the camera pans slowly "
                      f"to the right." for v in range(CAPTION_VARIANTS)], object)
    cols["caption_t2v"] = t2v[variant]
    cols["caption_i2v"] = t2v[variant]
    cols["caption_json"] = np.asarray([json.dumps({"subjects": [{"type": "human", "action": f"walks {v}"}],
                                                   "shot_type": "wide", "camera_motion": "pan right",
                                                   "environment": f"street {v}", "lighting": "dusk"})
                                       for v in range(CAPTION_VARIANTS)], object)[variant]
    arrays = []
    for field in schema:
        if field.name == "border_crop":
            flat = np.tile(np.array([0, 0, 320, 180], np.int32), n)
            arrays.append(pa.ListArray.from_arrays(pa.array(np.arange(0, 4 * n + 1, 4, dtype=np.int32)), flat))
        elif field.name in cols:
            arrays.append(pa.array(cols[field.name], field.type))
        elif pa.types.is_floating(field.type):  # other score columns: a plausible 0..1 value
            arrays.append(pa.array(rng.random(n), field.type))
        else:  # a column this generator does not know yet: null
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def side_means(n: int, ids: np.ndarray, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    """The side store's index column: mean signatures, DUP_SHARE of them re-uploads of another clip."""
    rng = np.random.default_rng(seed + 1)
    base, perm, m = np.arange(n), rng.permutation(n), int(n * DUP_SHARE)
    copies = perm[:m]
    base[copies] = perm[m:][rng.integers(0, n - m, m)]  # each copy re-uploads an original (never another copy)
    means = rng.normal(size=(n, DIM)).astype(np.float32)
    means[copies] = means[base[copies]] + rng.normal(scale=0.1, size=(len(copies), DIM)).astype(np.float32)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(means.ravel()), DIM)
    return pa.table({"clip_id": pa.array(ids, pa.string()), "dedup_mean": flat}), base


def generate(n: int, folder: str) -> None:
    table = clip_table(n)
    pq.write_table(table, os.path.join(folder, "pool.parquet"), compression="zstd", row_group_size=100_000)
    side, base = side_means(n, table.column("clip_id").to_numpy(zero_copy_only=False))
    pq.write_table(side, os.path.join(folder, "side.parquet"), compression="zstd", row_group_size=100_000)
    np.save(os.path.join(folder, "base.npy"), base)


class Meter:
    """Wall, CPU and peak RSS of one phase (RSS sampled in a thread)."""

    def __init__(self):
        self.proc, self.peak, self.phases = psutil.Process(), 0, {}
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def phase(self, name: str, fn, *args):
        start_rss = self.proc.memory_info().rss
        self.peak, wall, cpu = start_rss, time.perf_counter(), time.process_time()
        out = fn(*args)
        peak = max(self.peak, self.proc.memory_info().rss)
        self.phases[name] = {"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
                             "peak_rss_mb": round(peak / 2**20, 1), "peak_increment_mb": round((peak - start_rss) / 2**20, 1)}
        return out


def run_size(folder: str) -> dict:
    from infra import manifest as mf
    from infra.audit_models import Verdict
    from infra.config import load_config
    from infra.config_datasets import BalanceConfig, DatasetsConfig, dataset_stage_config
    from infra.config_filters import DedupConfig
    from tasks.curate import balance as bal
    from tasks.curate.datasets import OPS, why_in_run
    from tasks.curate.filters.dedup import clip_similarity
    from tasks.curate.filters.dedup_groups import group_by_index
    from tasks.curate.lib.dataset_view import add_verdicts, view_table

    meter, root = Meter(), os.path.join(folder, "runs")
    cfg = load_config("tiny", [f"storage.run_root={root}", f"state_dir={folder}/state"])
    specs = {s.name: s for s in DatasetsConfig().specs}
    run_uri = os.path.join(root, "bench")
    os.makedirs(run_uri, exist_ok=True)

    def publish(table, name):
        return mf.publish(table, os.path.join(run_uri, f".{name}.tmp"), os.path.join(run_uri, name), stage=name,
                          config_hash="bench", inputs=[], code_version="bench", started=time.time())

    def view(src, name, verdicts=None):
        table = mf.read_arrow(src)
        if verdicts is not None:
            table = add_verdicts(table, verdicts)
        return publish(view_table(table, dataset_stage_config(specs[name], DatasetsConfig(), "tiny"), OPS)[0], name)

    def concept_balance(src):
        table = mf.read_arrow(src)
        bcfg = BalanceConfig()
        eligible = table.column("in_D_540p").to_numpy(zero_copy_only=False)
        category, where = bal.categorize(table, eligible, bcfg)
        mask = pa.array(eligible)
        repeats, _ = bal.balance(table.column("clip_id").filter(mask).to_pylist(), category.filter(mask).to_pylist(), bcfg)
        rep = np.zeros(table.num_rows, np.int64)
        rep[eligible] = repeats
        out = bal._put(bal._put(table, "category", category), "category_source", where)
        return publish(bal._put(bal._put(out, "balance_repeat", pa.array(rep)), "in_D_post", pa.array(rep > 0)), "D_post")

    pool = os.path.join(folder, "pool.parquet")
    meter.phase("D_256p", view, pool, "D_256p")
    meter.phase("D_360p", view, pool, "D_360p")
    d540 = meter.phase("D_540p", view, pool, "D_540p")
    post = meter.phase("D_post (balance)", concept_balance, d540)
    sft = meter.phase("D_540p_sft", view, post, "D_540p_sft")
    kept = mf.read_arrow(sft, ["clip_id", "in_D_540p_sft"]).filter(pc.field("in_D_540p_sft")).column("clip_id")
    verdicts = {c: Verdict(clip_id=c, verdict="good" if i % 5 else "bad", reason=None if i % 5 else "text")
                for i, c in enumerate(kept.to_pylist()[:2000])}
    meter.phase("D_720p_sft", view, sft, "D_720p_sft", verdicts)

    base = np.load(os.path.join(folder, "base.npy"))

    def dedup():
        side = pq.read_table(os.path.join(folder, "side.parquet"))
        means = side.column("dedup_mean").combine_chunks().flatten().to_numpy().reshape(-1, DIM)

        def embedding(i):
            rng = np.random.default_rng(int(base[i]))
            frames = means[base[i]] + rng.normal(scale=0.5, size=(FRAMES, DIM)).astype(np.float32)
            frames += np.random.default_rng(i + 7).normal(scale=0.05, size=frames.shape).astype(np.float32)
            return np.broadcast_to(frames, (SCALES, FRAMES, DIM))

        groups = group_by_index(side.column("clip_id").to_pylist(), means, np.ones(len(means)), DedupConfig(),
                                lambda a, b: clip_similarity(embedding(a), embedding(b)))
        truth = base != np.arange(len(base))
        same = groups["group"][truth] == groups["group"][base[truth]]  # copy grouped with its original
        sizes = np.bincount(groups["group"], minlength=len(base))
        return {"candidates": groups["candidates"], "compared": groups["compared"],
                "duplicates_dropped": int((~groups["keep"]).sum()), "planted_copies": int(truth.sum()),
                "planted_copies_found": int(same.sum()),
                "clips_in_groups": int((sizes[groups["group"]] > 1).sum()),
                "clips_in_planted_groups": int(len(np.unique(np.concatenate([np.nonzero(truth)[0], base[truth]]))))}

    dups = meter.phase("dedup grouping", dedup)
    clip = kept[0].as_py()
    why = meter.phase("inspect --why", why_in_run, cfg, "bench", "D_540p", clip)
    assert why["status"] in ("in", "out"), why
    return {"phases": meter.phases, "dedup": dups, "rows": int(pq.ParquetFile(pool).metadata.num_rows),
            "pool_parquet_mb": round(os.path.getsize(pool) / 2**20, 1), "process_peak_rss_mb": round(
                psutil.Process().memory_info().rss / 2**20, 1)}


def slope(xs, ys) -> float | None:
    ys = np.maximum(np.asarray(ys, float), 1e-3)
    return round(float(np.polyfit(np.log(xs), np.log(ys), 1)[0]), 3) if len(xs) > 1 else None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--out", default="benchmarks/results/scale.json")
    parser.add_argument("--_gen", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_run", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._gen:
        return generate(int(args._gen[0]), args._gen[1])
    if args._run:
        print("RESULT " + json.dumps(run_size(args._run)))
        return {}
    sizes, results = sorted(args.sizes), {}
    report = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"scale-{n}-") as folder:
            subprocess.run([sys.executable, "-m", "benchmarks.scale", "--_gen", str(n), folder], check=True)
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--_run", folder], check=True,
                                 capture_output=True, text=True).stdout
            results[n] = json.loads(out.split("RESULT ", 1)[1]) | {"load_1min_before": round(load, 2),
                                                                   "load_1min_after": round(os.getloadavg()[0], 2)}
            tables = [p for p in results[n]["phases"] if p not in ("dedup grouping", "inspect --why")]
            results[n]["views_balance_dedup_wall_s"] = round(sum(
                results[n]["phases"][p]["wall_s"] for p in [*tables, "dedup grouping"]), 2)
            results[n]["views_balance_dedup_cpu_s"] = round(sum(
                results[n]["phases"][p]["cpu_s"] for p in [*tables, "dedup grouping"]), 2)
            results[n]["max_phase_peak_rss_mb"] = max(p["peak_rss_mb"] for p in results[n]["phases"].values())
            print(n, json.dumps(results[n]), flush=True)
        report = summarise(results, args.out)  # written after every size: a long run keeps what it measured
    return report


def summarise(results: dict[int, dict], out: str) -> dict:
    sizes = sorted(results)
    phases = list(results[sizes[0]]["phases"])
    slopes = {p: {k: slope(sizes, [results[n]["phases"][p][k] for n in sizes])
                  for k in ("wall_s", "cpu_s", "peak_rss_mb", "peak_increment_mb")} for p in phases}
    top = results[sizes[-1]]
    report = {
        "target": "log-log slope of time and peak memory <= 1.15 per table stage from 10k to 1M clips; 1M clips "
                  "through the six views + balance + dedup grouping in < 300 s and < 6 GiB peak",
        "sizes": sizes, "results": {str(n): r for n, r in results.items()}, "slopes": slopes,
        "largest": {"clips": sizes[-1], "views_balance_dedup_wall_s": top["views_balance_dedup_wall_s"],
                    "views_balance_dedup_cpu_s": top["views_balance_dedup_cpu_s"],
                    "max_phase_peak_rss_mb": top["max_phase_peak_rss_mb"],
                    "pass_time": top["views_balance_dedup_wall_s"] < 300,
                    "pass_memory": top["max_phase_peak_rss_mb"] < 6 * 1024},
        "host": platform.node(), "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
        "pyarrow": pa.__version__,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
