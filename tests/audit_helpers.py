"""Shared set-up for the audit tests: a run with a small published dataset whose clips exist."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from synthetic_pool import clip_ids, publish, stage_ctx

from infra.config_datasets import AuditConfig
from infra.video import write_video


def audit_run(cfg, tmp_path, n_clips: int = 6, run_id: str = "r1", ctx=None, salt: str = "audit"):
    """(ctx, dataset manifest): ``n_clips`` tiny mp4s inside the run's store, all in D_540p."""
    ctx = ctx or stage_ctx(cfg, tmp_path, run_id)
    folder = os.path.join(ctx.run_uri, "clips")
    os.makedirs(folder, exist_ok=True)
    ids = clip_ids(n_clips, salt=salt)
    rng = np.random.default_rng(0)
    uris = []
    for cid in ids:
        uri = os.path.join(folder, f"{cid}.mp4")
        write_video((rng.integers(0, 255, (36, 64, 3), dtype=np.uint8) for _ in range(12)), uri, 24)
        uris.append(uri)
    df = pd.DataFrame({"clip_id": ids, "clip_uri": uris, "error": None, "category": "human",
                       "caption_t2v": [f"a person walks, clip {i}" for i in range(n_clips)], "in_D_540p": True})
    return ctx, publish(ctx, df, f"D_540p_{salt}")


def audit_cfg(**kw) -> AuditConfig:
    return AuditConfig(**{"min_sample": 4, "poll_s": 0.1, **kw})


def start_audit_server(run_uri: str, port: int, tokens: dict[str, str], tries: int = 600):
    """`infra.audit_app.serve` in a child process (so tests can SIGKILL it); returns once /healthz answers."""
    import subprocess
    import sys
    import time

    import httpx

    code = f"import sys; from infra.audit_app import serve; serve(sys.argv[1], {tokens!r}, '127.0.0.1', int(sys.argv[2]))"
    proc = subprocess.Popen([sys.executable, "-c", code, run_uri, str(port)])
    for _ in range(tries):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("audit server did not start")
