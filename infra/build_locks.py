"""Stale build locks of torch C++ extensions (DeepSpeed's CPU comm op is built at its first start).

torch marks a build in progress with a plain ``lock`` file in the extension's build folder and every
other process waits, polling, until the file is gone. A build killed half-way (a stopped test run, a
SIGKILLed worker) leaves the file behind and every later DeepSpeed start then waits forever, silently.
A real build takes under a minute; a lock much older than that has no builder left.
"""

from __future__ import annotations

import glob
import logging
import os
import time

log = logging.getLogger("reelflow.build")
STALE_AFTER_S = 600.0


def build_root() -> str:
    from torch.utils.cpp_extension import get_default_build_root

    return os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()


def clear_stale_locks(root: str | None = None, stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Remove build locks older than ``stale_after_s`` under ``root`` (default: torch's extension
    build root); returns what was removed, each named in a warning."""
    removed = []
    for lock in glob.glob(os.path.join(root or build_root(), "*", "*", "lock")):
        try:
            age = time.time() - os.path.getmtime(lock)
            if age > stale_after_s:
                os.unlink(lock)
                removed.append(lock)
                log.warning("removed a stale C++ extension build lock (%.0f min old, its build was killed): %s; "
                            "the extension is rebuilt", age / 60, lock)
        except FileNotFoundError:  # its builder finished meanwhile
            continue
    return removed
