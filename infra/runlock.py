"""One writer per run: a lock per run id, taken before anything under the run is touched.

Two processes writing one run folder lose data (the second one's start removes the first one's
unpublished temporaries; both publish the same stages). So a run is held by exactly one process:

- a local file lock (``flock``): the kernel drops it when the holder dies, however it dies, so
  a stale lock of a dead holder is taken over at once and safely. Local run roots keep it in
  the run folder; object-store roots in ``{state_dir}/locks/``.
- on an object store, also a lease object ``{run}/_LEASE.json`` created and renewed with S3
  conditional writes (If-None-Match / If-Match), so two machines cannot hold one run. A holder
  renews it every ``ttl/3``; a lease not renewed for ``ttl`` seconds (dead holder) is taken over.

A refused start names the holder: host, pid and start time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from infra import storage

log = logging.getLogger("reelflow.runlock")
LOCK_FILE = ".reelflow-run.lock"
LEASE_FILE = "_LEASE.json"
_HELD: dict[str, RunLock] = {}
_GUARD = threading.Lock()


class RunLockedError(RuntimeError):
    """Another live process holds this run."""


@dataclass
class Holder:
    run_id: str
    host: str
    pid: int
    started: float
    token: str
    expires: float = 0.0  # lease only

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"host {self.host}, pid {self.pid}, started {when}"


def pid_alive(pid: int) -> bool:
    """Whether a process of this host still holds ``pid`` (signal 0 probes without touching it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Held while the run's process writes it; :func:`hold` / :func:`release` count nested uses."""

    def __init__(self, run_uri: str, run_id: str, state_dir: str, lease_ttl: float = 60.0):
        self.run_uri, self.run_id, self.lease_ttl = run_uri, run_id, lease_ttl
        self.holder = Holder(run_id, socket.gethostname(), os.getpid(), time.time(), uuid.uuid4().hex[:12])
        if storage.is_remote(run_uri):
            digest = hashlib.sha256(run_uri.encode()).hexdigest()[:16]
            self.lock_path = os.path.join(os.path.abspath(state_dir), "locks", f"{run_id}-{digest}.lock")
        else:
            self.lock_path = os.path.join(storage.normalize(run_uri), LOCK_FILE)
        self.lease_uri = storage.join(run_uri, LEASE_FILE) if storage.is_remote(run_uri) else None
        self._fd: int | None = None
        self._etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False
        self.users = 0

    # --- local file lock ---------------------------------------------------------------------

    def _lock_file(self) -> None:
        os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise RunLockedError(self._refusal(_parse(text), "lock " + self.lock_path)) from None
        previous = _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
        if previous is not None:  # flock is free, so its writer is gone (the kernel drops it at exit)
            log.warning("run %s: taking over the lock of a dead holder (%s)", self.run_id, previous.describe())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(self.holder)).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    # --- object-store lease ------------------------------------------------------------------

    def _s3(self, op: str, **kwargs):
        bucket, key = self.lease_uri[len("s3://"):].split("/", 1)
        return storage.filesystem(self.lease_uri).call_s3(op, Bucket=bucket, Key=key, **kwargs)

    def _put(self, **condition) -> None:
        self.holder.expires = time.time() + self.lease_ttl
        reply = self._s3("put_object", Body=json.dumps(asdict(self.holder)).encode(), **condition)
        self._etag = reply.get("ETag")

    def _read_lease(self) -> tuple[Holder | None, str | None]:
        try:
            etag = self._s3("head_object")["ETag"]  # the tag first: a later change fails If-Match
        except FileNotFoundError:
            return None, None
        return _parse(storage.filesystem(self.lease_uri).cat_file(self.lease_uri).decode()), etag

    def _take_lease(self) -> None:
        try:
            self._put(IfNoneMatch="*")
            return
        except FileExistsError:
            pass
        current, etag = self._read_lease()
        if current is None:  # released between our two calls: try once more
            self._put(IfNoneMatch="*")
            return
        dead_here = current.host == self.holder.host and not pid_alive(current.pid)
        if current.expires > time.time() and not dead_here:
            raise RunLockedError(self._refusal(current, "lease " + self.lease_uri))
        log.warning("run %s: taking over the lease of a dead holder (%s)", self.run_id, current.describe())
        try:
            self._put(IfMatch=etag)
        except OSError:
            raise RunLockedError(self._refusal(self._read_lease()[0], "lease " + self.lease_uri)) from None

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_ttl / 3):
            try:
                self._put(IfMatch=self._etag)
            except Exception as exc:  # another holder took it (we stalled past the ttl) or S3 is down
                current = None
                try:
                    current = self._read_lease()[0]
                except Exception:
                    pass
                if current is not None and current.token != self.holder.token:
                    self.lost = True
                    log.error("run %s: lease lost to %s; this process must stop writing", self.run_id,
                              current.describe())
                    return
                log.warning("run %s: lease renewal failed (%s); retrying", self.run_id, exc)

    # --- both --------------------------------------------------------------------------------

    def _refusal(self, holder: Holder | None, where: str) -> str:
        who = holder.describe() if holder else "a process that has not written its name yet"
        return (f"run {self.run_id!r} is already running ({who}; {where}). One process writes a run: wait "
                f"for it to finish or stop it, or pass another --run-id")

    def acquire(self) -> RunLock:
        self._lock_file()
        if self.lease_uri:
            try:
                self._take_lease()
            except BaseException:
                self._unlock_file()
                raise
            self._renewer = threading.Thread(target=self._renew, name=f"lease-{self.run_id}", daemon=True)
            self._renewer.start()
        return self

    def check(self) -> None:
        """Raise when the lease was lost: a writer that is no longer the holder must not publish. The
        lease object is read now, not only at the last renewal: a holder that stalled past the ttl
        may have been replaced a moment ago."""
        if self.lease_uri and not self.lost:
            try:
                current = self._read_lease()[0]
            except Exception:  # store unreachable: the publish itself fails and is retried
                current = self.holder
            self.lost = current is None or current.token != self.holder.token
        if self.lost:
            raise RunLockedError(f"run {self.run_id!r}: this process lost its lease; nothing more is published")

    def _unlock_file(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self.lease_uri and not self.lost:
            try:
                self._s3("delete_object", IfMatch=self._etag)
            except Exception as exc:  # expires by itself; a later run takes it over
                log.warning("run %s: could not remove the lease (%s); it expires in %.0fs", self.run_id, exc,
                            self.lease_ttl)
        self._unlock_file()


def _parse(text: str) -> Holder | None:
    try:
        return Holder(**json.loads(text))
    except (ValueError, TypeError):
        return None


def hold(run_uri: str, run_id: str, state_dir: str, lease_ttl: float = 60.0) -> RunLock:
    """Take (or, in the process already holding it, re-enter) the run's lock; raises
    :class:`RunLockedError` naming the holder when another live process has it."""
    with _GUARD:
        lock = _HELD.get(run_uri)
        if lock is None:
            lock = RunLock(run_uri, run_id, state_dir, lease_ttl).acquire()
            _HELD[run_uri] = lock
        lock.users += 1
        return lock


def release(run_uri: str) -> None:
    with _GUARD:
        lock = _HELD.get(run_uri)
        if lock is None:
            return
        lock.users -= 1
        if lock.users <= 0:
            del _HELD[run_uri]
            lock.release()


def held(run_uri: str) -> RunLock | None:
    return _HELD.get(run_uri)
