"""Audit server under hostile load: peak memory while serving oversized unauthenticated requests.

Starts the real server (``infra.audit_app.serve``: uvicorn in its own process) on an empty run store,
reads its resident memory when idle, sends ``--requests`` POSTs that each declare a ``--declared-mb``
body and start streaming it without a token (raw sockets, ``--workers`` at a time), and reads the
process's peak resident memory (``VmHWM``) afterwards. Target (reelflow issue 18): peak under 50 MB
above idle, every request answered 4xx. Also sent: the same bodies with a valid token (413 by size),
chunked without a Content-Length, and 44 MB of nested JSON without a token. Reference in the same run:
the same app without the guard, 16 unauthenticated requests sending 20 MB each.

    python -m benchmarks.audit_memory [--requests 100] [--declared-mb 200] [--sent-mb 4]

Writes benchmarks/results/audit_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

CHUNK = 64 * 1024


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak since start) of a process, in KiB (Linux /proc)."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        part = sock.recv(4096)
        if not part:
            break
        data += part
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def hostile_request(host: str, port: int, path: str, declared_mb: float, sent_mb: float, headers: str = "",
                    chunked: bool = False, body: bytes | None = None) -> int:
    """One request that declares (or streams) a large body and keeps sending until the server answers;
    returns the HTTP status (0: no answer)."""
    length = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {int(declared_mb * 2**20)}\r\n"
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{length}{headers}\r\n"
    block = b"[" * CHUNK if body is None else None
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head.encode())
        sent, limit = 0, int(sent_mb * 2**20)
        while sent < limit:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered: stop sending, read it
            piece = body[sent:sent + CHUNK] if body is not None else block
            if not piece:
                break
            data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        try:
            return _status(sock)
        except (ConnectionResetError, TimeoutError):
            return 0


def hostile_flood(host: str, port: int, path: str, requests: int = 100, declared_mb: float = 200, sent_mb: float = 4,
                  workers: int = 8, headers: str = "", chunked: bool = False) -> dict[int, int]:
    with ThreadPoolExecutor(workers) as pool:
        codes = pool.map(lambda _: hostile_request(host, port, path, declared_mb, sent_mb, headers, chunked),
                         range(requests))
        return dict(Counter(codes))


def _serve(run_uri: str, port: int, token: str, guarded: bool = True) -> subprocess.Popen:
    """The server in its own process; ``guarded=False`` is the reference: the same app without the
    front door (``infra.audit_guard.Guard``), i.e. FastAPI reading and parsing bodies before auth."""
    unguard = "" if guarded else "a.Guard = lambda app, tokens: app; "
    code = (f"import sys, infra.audit_app as a; {unguard}"
            "a.serve(sys.argv[1], {sys.argv[3]: 'bench'}, '127.0.0.1', int(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, run_uri, str(port), token])
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if _status(s) == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("audit server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--declared-mb", type=float, default=200)
    parser.add_argument("--sent-mb", type=float, default=4)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "audit_memory.json"))
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "bench-token-0123456789"
    path = "/api/audit/D_256p-00000000/verdicts"
    with tempfile.TemporaryDirectory() as run_uri:
        proc = _serve(run_uri, port, token)
        try:
            time.sleep(1.0)
            idle = rss_kib(proc.pid)["VmRSS"]
            started = time.time()
            flood = hostile_flood("127.0.0.1", port, path, args.requests, args.declared_mb, args.sent_mb, args.workers)
            seconds = time.time() - started
            peak_flood = rss_kib(proc.pid)["VmHWM"]
            other = {
                "authenticated_oversized": hostile_flood("127.0.0.1", port, path, 20, args.declared_mb, args.sent_mb,
                                                         args.workers, headers=f"Authorization: Bearer {token}\r\n"),
                "chunked_no_length_no_token": hostile_flood("127.0.0.1", port, path, 20, 0, args.sent_mb, args.workers,
                                                            chunked=True),
                "chunked_no_length_with_token": hostile_flood("127.0.0.1", port, path, 20, 0, args.sent_mb,
                                                              args.workers, chunked=True,
                                                              headers=f"Authorization: Bearer {token}\r\n"),
                "nested_json_44mb_no_token": {hostile_request("127.0.0.1", port, path, 44, 44): 1},
            }
            peak = rss_kib(proc.pid)["VmHWM"]
        finally:
            proc.kill()
            proc.wait()
        # Reference: the unguarded app, 16 unauthenticated requests that send their whole 20 MB body.
        ref = _serve(run_uri, port, token, guarded=False)
        try:
            time.sleep(1.0)
            ref_idle = rss_kib(ref.pid)["VmRSS"]
            ref_statuses = hostile_flood("127.0.0.1", port, path, 16, 20, 20, args.workers)
            ref_peak = rss_kib(ref.pid)["VmHWM"]
        finally:
            ref.kill()
            ref.wait()
    result = {
        "requests": args.requests, "declared_mb": args.declared_mb, "sent_mb_at_most": args.sent_mb,
        "workers": args.workers, "idle_rss_mb": round(idle / 1024, 1), "peak_rss_mb_after_flood": round(peak_flood / 1024, 1),
        "growth_mb_flood": round((peak_flood - idle) / 1024, 1), "growth_mb_all": round((peak - idle) / 1024, 1),
        "flood_statuses": flood, "flood_seconds": round(seconds, 2), "other_statuses": other,
        "reference_unguarded_16x20mb": {"statuses": ref_statuses, "idle_rss_mb": round(ref_idle / 1024, 1),
                                        "growth_mb": round((ref_peak - ref_idle) / 1024, 1)},
        "target_growth_mb": 50, "passed": (peak - idle) / 1024 < 50 and set(flood) == {401},
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
