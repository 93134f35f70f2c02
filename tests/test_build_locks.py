"""infra.build_locks: a build lock left by a killed C++ extension build no longer hangs DeepSpeed's start."""

import os
import time

from infra.build_locks import STALE_AFTER_S, clear_stale_locks


def test_only_locks_older_than_any_real_build_are_removed(tmp_path, caplog):
    stale = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock"
    live = tmp_path / "py311_cpu" / "other_op" / "lock"
    for lock in (stale, live):
        lock.parent.mkdir(parents=True)
        lock.touch()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(stale, (old, old))
    with caplog.at_level("WARNING", logger="reelflow.build"):
        assert clear_stale_locks(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and live.exists()  # a build in progress keeps its lock
    assert "stale C++ extension build lock" in caplog.text
    assert clear_stale_locks(str(tmp_path)) == []
