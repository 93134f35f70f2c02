"""The runs under a run root, as a person looks for them: where the root is, which runs exist, what state
each is in (``reelflow runs``).

A run's state lives beside its stages in ``.reelflow-run.json`` (written by ``reelflow run`` when it
starts and when it ends; no absolute path in it, so a moved run store still reads). A run marked
running whose process is gone (its run lock free) is reported as interrupted.
"""

from __future__ import annotations

import json
import os
import socket
import time

from infra import manifest as mf
from infra import storage
from infra.runlock import pid_alive

RECORD = ".reelflow-run.json"
HOME_ENV = "REELFLOW_HOME"
DEFAULT_RUN_ROOT = "runs"
DEFAULT_STATE_DIR = ".reelflow"


def home_overrides(current_run_root: str, current_state_dir: str, overrides: list[str]) -> list[str]:
    """``--set`` items that put the run root (and state) under ``$REELFLOW_HOME`` when it is set and
    neither the profile nor the command line chose a run root: ``reelflow inspect`` then finds the
    runs from any directory, not only the one ``reelflow run`` started in."""
    home = os.environ.get(HOME_ENV)
    if not home:
        return []
    home = os.path.abspath(os.path.expanduser(home))
    named = {item.split("=", 1)[0].strip() for item in overrides}
    extra = []
    if current_run_root == DEFAULT_RUN_ROOT and "storage.run_root" not in named:
        extra.append(f"storage.run_root={os.path.join(home, DEFAULT_RUN_ROOT)}")
    if current_state_dir == DEFAULT_STATE_DIR and "state_dir" not in named:
        extra.append(f"state_dir={os.path.join(home, DEFAULT_STATE_DIR)}")
    return extra


def where(run_root: str) -> str:
    """The run root as a person should read it in a message (absolute when local)."""
    return run_root if storage.is_remote(run_root) else os.path.abspath(storage._strip_file(run_root))


def _record_uri(run_uri: str) -> str:
    return storage.join(run_uri, RECORD)


def read_record(run_uri: str) -> dict:
    try:
        return json.loads(storage.read_text(_record_uri(run_uri)))
    except (FileNotFoundError, ValueError, OSError):
        return {}


def record_start(run_uri: str, run_id: str, until: str | None, profile: str, audit: str) -> None:
    storage.makedirs(run_uri)
    storage.write_text(_record_uri(run_uri), json.dumps({
        "run_id": run_id, "status": "running", "started": time.time(), "ended": None, "until": until,
        "profile": profile, "audit": audit, "host": socket.gethostname(), "pid": os.getpid(), "error": None,
    }, indent=1))


def record_end(run_uri: str, ok: bool, error: str | None = None) -> None:
    record = read_record(run_uri)
    record.update(status="finished" if ok else "failed", ended=time.time(), error=error)
    storage.write_text(_record_uri(run_uri), json.dumps(record, indent=1))


def lock_held(run_uri: str) -> bool:
    """True when a live process holds the run's lock file (``infra.runlock``; local run roots only)."""
    if storage.is_remote(run_uri):
        return False
    path = os.path.join(storage.normalize(run_uri), ".reelflow-run.lock")
    if not os.path.exists(path):
        return False
    import fcntl

    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def _status(record: dict, run_uri: str, stages: dict[str, mf.Manifest]) -> str:
    if lock_held(run_uri):
        return "running"
    status = record.get("status")
    if status == "running":
        # No live lock holder: the process that wrote "running" died (or, without a lock file, check its pid).
        has_lock_file = not storage.is_remote(run_uri) and os.path.exists(
            os.path.join(storage.normalize(run_uri), ".reelflow-run.lock"))
        alive = (not has_lock_file and record.get("host") == socket.gethostname()
                 and pid_alive(int(record.get("pid") or 0)))
        return "running" if alive else "interrupted"
    return status or ("partial" if stages else "empty")


def run_names(run_root: str) -> list[str]:
    root = storage.normalize(run_root)
    if not storage.exists(root):
        return []
    fs = storage.filesystem(root)
    names = []
    for path in fs.ls(storage._path(root), detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith(".") and fs.isdir(path) and name not in ("mlartifacts",):
            names.append(name)
    return sorted(names)


def stages_of(run_uri: str) -> dict[str, mf.Manifest]:
    """Published stages of a run, in publication order."""
    fs = storage.filesystem(run_uri)
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(storage._path(run_uri), detail=False)]
    found = {n: mf.load_success(storage.join(run_uri, n)) for n in names if not n.startswith(".") and n != "audits"}
    done = {n: m for n, m in found.items() if m is not None}
    return dict(sorted(done.items(), key=lambda kv: (kv[1].created_at, kv[0])))


def summarize_run(run_root: str, run_id: str) -> dict:
    run_uri = storage.join(storage.normalize(run_root), run_id)
    stages = stages_of(run_uri)
    record = read_record(run_uri)
    started = record.get("started") or min((m.created_at - m.seconds for m in stages.values()), default=None)
    ended = record.get("ended") or max((m.created_at for m in stages.values()), default=None)
    return {
        "run_id": run_id, "status": _status(record, run_uri, stages), "stages_done": len(stages),
        "last_stage": next(reversed(stages), None) if stages else None, "stages": list(stages),
        "started": started, "ended": ended,
        "seconds": round(ended - started, 1) if started and ended else None,
        "stage_seconds": round(sum(m.seconds for m in stages.values()), 1),
        "until": record.get("until"), "error": record.get("error"),
    }


def list_runs(run_root: str) -> list[dict]:
    """Every run under ``run_root`` (a folder that holds no stage and no record is not a run), newest first."""
    runs = [summarize_run(run_root, name) for name in run_names(run_root)]
    runs = [r for r in runs if r["stages_done"] or r["status"] != "empty"]
    return sorted(runs, key=lambda r: -(r["started"] or 0))


def format_runs(runs: list[dict], run_root: str) -> str:
    if not runs:
        return f"no runs under {where(run_root)} (start one: reelflow run; another root: REELFLOW_HOME or " \
               f"--set storage.run_root=...)"
    lines = [f"runs under {where(run_root)}",
             f"{'run':<28} {'status':<12} {'stages':>6}  {'last stage':<14} {'started (UTC)':<19} {'time':>8}"]
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["started"])) if r["started"] else "-"
        took = f"{r['seconds']:.0f}s" if r["seconds"] is not None else "-"
        lines.append(f"{r['run_id']:<28} {r['status']:<12} {r['stages_done']:>6}  {r['last_stage'] or '-':<14} "
                     f"{when:<19} {took:>8}")
        if r["status"] == "failed" and r["error"]:
            lines.append(f"{'':<28} {r['error'][:120]}")
    return "\n".join(lines)
