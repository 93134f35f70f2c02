"""Driver memory of a per-item stage as its output grows: rows gathered on the driver vs shards written by
the workers (``infra/shards.py``).

``python -m benchmarks.driver_memory`` writes ``benchmarks/results/driver_memory.json``. Per size (clip rows
of the real clip-table schema, 500 rows per item as a long film cut into clips gives), each mode runs in a
fresh process on a local 2-CPU Ray: ``flat_map_items`` over the items with a worker that makes the rows, then
``manifest.publish`` of the result, as a stage does. The driver's RSS is sampled every 20 ms; reported: the
peak increment over the RSS after Ray and the imports are up, wall time, and the published fingerprint (both
modes must publish the same table). The log-log slope of the peak increment against the row count is fitted
per mode: the gathered mode grows with the rows, the sharded one must not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.peak_rss import PeakRSS

SIZES = (10_000, 100_000, 300_000)
ROWS_PER_ITEM = 500
OUT = Path(__file__).resolve().parent / "results" / "driver_memory.json"


class ClipRowsWorker:
    """Item i -> ROWS_PER_ITEM clip rows with the clip table's columns (paths inside the run)."""

    def __init__(self, root: str):
        self.root = root

    def __call__(self, item: int) -> list[dict]:
        src = f"src{item:06d}"
        return [{"clip_id": f"{src}-{k:04d}-{'c' * 24}", "source_id": src, "source_uri": f"/data/in/{src}.mp4",
                 "media": "video", "shot_id": f"{src}-shot{k:04d}", "start_frame": 48 * k, "end_frame": 48 * k + 47,
                 "fps": 24.0, "width": 1280, "height": 720, "num_frames": 47,
                 "clip_uri": f"{self.root}/clips/{src}-{k:04d}.mp4", "error": None}
                for k in range(ROWS_PER_ITEM)]


def _one(rows: int, mode: str) -> dict:
    """Runs in its own process: one stage output of ``rows`` rows through ``mode``."""
    import ray

    from infra import manifest as mf
    from infra.config import load_config
    from infra.config_base import StageResources
    from infra.raydata import flat_map_items
    from infra.runtime import init_ray
    from infra.shards import PARTS
    from infra.tables import CLIPS_SCHEMA

    base = tempfile.mkdtemp(prefix="reelflow-drivermem-")
    run = os.path.join(base, "runs", "bench")
    init_ray(load_config("tiny", [f"storage.run_root={base}/runs", f"state_dir={base}/state", "ray.num_cpus=2"]))
    with PeakRSS() as rss:
        started, cpu = time.perf_counter(), time.process_time()
        final = os.path.join(run, "clips")
        tmp = mf.tmp_dir_for(final)
        items = list(range(rows // ROWS_PER_ITEM))
        result = flat_map_items(items, ClipRowsWorker, {"root": run}, CLIPS_SCHEMA, StageResources(actors=2),
                                stage="clips", shard_dir=os.path.join(tmp, PARTS) if mode == "sharded" else None)
        manifest = mf.publish(result, tmp, final, stage="clips", config_hash="bench", inputs=[],
                              code_version="bench", started=time.time())
        wall, driver_cpu = time.perf_counter() - started, time.process_time() - cpu
    ray.shutdown()
    return {"rows": manifest.row_count, "mode": mode, "wall_s": round(wall, 2), "driver_cpu_s": round(driver_cpu, 2),
            "driver_peak_increment_mb": rss.increment_mb, "driver_rss_after_ray_mb": rss.baseline_mb,
            "fingerprint": manifest.fingerprint}


def _slope(points: list[dict]) -> float:
    x = np.log([p["rows"] for p in points])
    y = np.log([max(p["driver_peak_increment_mb"], 1.0) for p in points])  # 1 MB floor: sampling noise
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--one", nargs=2, metavar=("ROWS", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(_one(int(args.one[0]), args.one[1])))
        return {}
    load = {"start": os.getloadavg()}
    points = []
    for rows in args.sizes:
        for mode in ("gathered", "sharded"):
            done = subprocess.run([sys.executable, "-m", "benchmarks.driver_memory", "--one", str(rows), mode],
                                  capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            points.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(points[-1]), flush=True)
    load["end"] = os.getloadavg()
    same = all(len({p["fingerprint"] for p in points if p["rows"] == r}) == 1 for r in args.sizes)
    result = {
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
        "rows_per_item": ROWS_PER_ITEM,
        "points": points,
        "slope_driver_peak_increment": {m: _slope([p for p in points if p["mode"] == m])
                                        for m in ("gathered", "sharded")},
        "same_published_table": same,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg": load},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("slope_driver_peak_increment", "same_published_table")}))
    return result


if __name__ == "__main__":
    main()
