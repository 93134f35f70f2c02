"""Driver memory of the real ``caption`` stage from 100 to 1,600 clips.

``python -m benchmarks.caption_driver_memory`` writes ``benchmarks/results/caption_driver_memory.json``. Per
size, in a fresh process: a clip table of N short H.264 clips (16 frames, 96x54, a coarse random layout each,
drifting over the frames), then ``tasks.curate.caption.run`` through Ray with two actors, as a run calls it
(MLflow child run, workers writing shards, publish). The workers are made cheap, since they set the stage's
speed, not the driver's memory, and the machine is shared: the tiny random captioner decodes strings of at
most 8 characters (``captioner.string_cap``), the shot, camera-motion and expression experts are off. The
driver's RSS is sampled every 20 ms; reported: the peak increment
over the RSS once Ray and the models are up (a first 1-clip caption run warms them), and the ratio of the
largest to the smallest increment (target: within 20%, i.e. at most 1.2). ``--batch-size`` (the captioner's
batch, default 32) also sets the shard size (``tasks.curate.caption.clip_batches``: up to 32 clips, rounded
up to whole batches): at 32 every size has shards of 32 clips, so the increments show what grows with the
number of clips, not with the shard (with the stage default of 8: shards of 8 clips at 100, 32 from 400 on).
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

from benchmarks.peak_rss import PeakRSS

SIZES = (100, 400, 1600)
OUT = Path(__file__).resolve().parent / "results" / "caption_driver_memory.json"


def write_clips(base: Path, n: int) -> list[str]:
    """``n`` short clips with distinct content (a coarse random layout each, panning)."""
    import numpy as np

    from infra.video import write_video

    files = []
    for k in range(n):
        layout = np.random.default_rng(k).integers(0, 255, (6, 10, 3)).astype(np.uint8)
        big = np.kron(layout, np.ones((12, 12, 1), np.uint8))
        frames = [np.ascontiguousarray(big[t // 2:t // 2 + 54, t:t + 96]) for t in range(16)]
        files.append(str(base / f"clip{k}.mp4"))
        write_video(frames, files[-1], 24)
    return files


def _one(n: int, batch: int) -> dict:
    import pyarrow as pa

    from infra.config import ClipsConfig, load_config
    from infra.config_caption import CaptionConfig
    from infra.session import open_run
    from infra.stage import run_stage
    from infra.tables import CLIPS_SCHEMA
    from tasks.curate import caption

    base = Path(tempfile.mkdtemp(prefix="reelflow-captionmem-"))
    files = write_clips(base, n)
    ctx = open_run(load_config("tiny", [f"storage.run_root={base / 'runs'}", f"state_dir={base / 'state'}"]), "mem")
    cfg = CaptionConfig(resources={"actors": 2}, cache_dir=str(base / "models"), captioner={"string_cap": 8, "batch_size": batch},
                        shot={"enabled": False}, camera_motion_enabled=False, expression_enabled=False, sample_captions=2)

    def clips(count: int, name: str):
        rows = [{"clip_id": f"c{i:06d}", "source_id": f"s{i}", "source_uri": files[i], "media": "video",
                 "shot_id": f"s{i}:0", "start_frame": 0, "end_frame": 16, "fps": 24.0, "width": 96,
                 "height": 54, "num_frames": 16, "clip_uri": files[i], "error": None} for i in range(count)]
        return run_stage(ctx, name, ClipsConfig(), [], lambda work: pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA))

    caption.run(ctx, cfg, clips(1, "warm"))  # Ray, the actors' models and the tiny captioner: up before measuring
    table = clips(n, "clips")
    with PeakRSS() as rss:
        started = time.perf_counter()
        done = caption.run(ctx, cfg, table)
        wall = time.perf_counter() - started
    return {"clips": n, "rows": done.row_count, "captioned": done.stats.get("captioned"),
            "validity_rate": done.stats.get("validity_rate"), "wall_s": round(wall, 1),
            "driver_rss_before_mb": rss.baseline_mb, "driver_peak_increment_mb": rss.increment_mb}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one, args.batch_size)))
        return {}
    load = {"start": os.getloadavg()}
    points, result = [], {}
    for n in args.sizes:
        done = subprocess.run([sys.executable, "-m", "benchmarks.caption_driver_memory", "--one", str(n),
                               "--batch-size", str(args.batch_size)],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        points.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(points[-1]), flush=True)
        result = _write(points, load, args.out, args.batch_size)  # after every size: a long run that is cut short keeps its points
    return result


def _write(points: list[dict], load: dict, out: Path, batch: int) -> dict:
    load["end"] = os.getloadavg()
    increments = [p["driver_peak_increment_mb"] for p in points]
    totals = [p["driver_rss_before_mb"] + p["driver_peak_increment_mb"] for p in points]
    result = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "captioner_batch_size": batch, "points": points,
              "max_over_min_increment": round(max(increments) / max(min(increments), 1.0), 3),
              # the driver's whole peak RSS (Ray, torch and the stage's modules loaded) at each size
              "max_over_min_peak_rss": round(max(totals) / min(totals), 4),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg": load}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
