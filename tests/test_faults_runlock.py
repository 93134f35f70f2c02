"""One writer per run: a second process refuses at once naming the holder; a dead holder's lock
is taken over and only then are its temporaries removed; the S3 lease behaves the same across
machines (conditional writes on a moto server)."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from s3_server import moto_s3

from infra import manifest as mf
from infra import runlock, storage
from infra.runlock import RunLock, RunLockedError
from infra.session import open_run

BUCKET = "reelflow-lock-test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _holder(run_uri: str, state: str, tmp_name: str) -> subprocess.Popen:
    """Another process that takes the run and writes a stage temporary, then keeps working."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from infra import runlock
        runlock.hold({run_uri!r}, "r1", {state!r})
        os.makedirs(os.path.join({run_uri!r}, {tmp_name!r}), exist_ok=True)
        print("ready", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_second_writer_refuses_naming_the_holder_and_dead_holder_is_taken_over(tmp_path, make_cfg):
    cfg = make_cfg()
    run_uri = str(tmp_path / "runs" / "r1")
    live_tmp = ".clips.tmp-live0001"
    proc = _holder(run_uri, cfg.state_dir, live_tmp)
    try:
        started = time.time()
        with pytest.raises(RunLockedError) as refused:
            open_run(cfg, "r1")  # what every flow calls first
        assert time.time() - started < 5
        message = str(refused.value)
        assert f"pid {proc.pid}" in message and socket.gethostname() in message and "started 20" in message
        assert os.path.isdir(os.path.join(run_uri, live_tmp)), "a live writer's temporary must survive"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lock = runlock.hold(run_uri, "r1", cfg.state_dir)  # the kernel dropped the dead holder's flock
    try:
        assert lock.holder.pid == os.getpid()
        assert json.loads(open(os.path.join(run_uri, runlock.LOCK_FILE)).read())["pid"] == os.getpid()
        assert mf.clean_stale_tmp(run_uri) == [os.path.join(run_uri, live_tmp)]
    finally:
        runlock.release(run_uri)


def test_nested_holds_in_one_process_share_the_lock(tmp_path):
    run_uri = str(tmp_path / "r2")
    first = runlock.hold(run_uri, "r2", str(tmp_path / "state"))
    assert runlock.hold(run_uri, "r2", str(tmp_path / "state")) is first
    runlock.release(run_uri)
    assert runlock.held(run_uri) is first
    runlock.release(run_uri)
    assert runlock.held(run_uri) is None
    again = runlock.hold(run_uri, "r2", str(tmp_path / "state"))
    runlock.release(run_uri)
    assert again is not first


@pytest.fixture
def s3(monkeypatch):
    with moto_s3(monkeypatch, BUCKET) as (endpoint, client):
        storage.configure_storage(endpoint)
        try:
            yield client
        finally:
            storage.configure_storage(None)
            monkeypatch.delenv("REELFLOW_S3_ENDPOINT_URL", raising=False)


def _lease(client, run: str) -> dict:
    return json.loads(client.get_object(Bucket=BUCKET, Key=f"{run}/{runlock.LEASE_FILE}")["Body"].read())


def _other_machine(run_uri: str, tmp_path, name: str) -> RunLock:
    """A RunLock as another host would make it (its own local lock folder, its own host name)."""
    lock = RunLock(run_uri, "r3", str(tmp_path / name), lease_ttl=30)
    lock.holder.host = f"{name}.example"
    return lock


def test_s3_lease_refuses_a_second_machine_and_is_removed_on_release(s3, tmp_path):
    run_uri = f"s3://{BUCKET}/runs/r3"
    mine = runlock.hold(run_uri, "r3", str(tmp_path / "a"))
    try:
        assert _lease(s3, "runs/r3")["token"] == mine.holder.token
        with pytest.raises(RunLockedError, match=rf"host {socket.gethostname()}, pid {os.getpid()}"):
            _other_machine(run_uri, tmp_path, "b").acquire()
    finally:
        runlock.release(run_uri)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/r3/")


@pytest.mark.parametrize("stale", ["expired", "dead-pid-here"])
def test_s3_lease_of_a_dead_holder_is_taken_over(s3, tmp_path, stale):
    run_uri = f"s3://{BUCKET}/runs/r4-{stale}"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host, expires = ("ghost.example", time.time() - 1) if stale == "expired" else (socket.gethostname(), time.time() + 600)
    s3.put_object(Bucket=BUCKET, Key=f"runs/r4-{stale}/{runlock.LEASE_FILE}", Body=json.dumps(
        {"run_id": "r4", "host": host, "pid": dead.pid, "started": 0.0, "token": "deadbeef", "expires": expires}))
    lock = RunLock(run_uri, "r4", str(tmp_path / "c")).acquire()
    try:
        assert _lease(s3, f"runs/r4-{stale}")["token"] == lock.holder.token
    finally:
        lock.release()


def test_a_holder_that_lost_its_lease_knows_it(s3, tmp_path):
    run_uri = f"s3://{BUCKET}/runs/r5"
    lock = RunLock(run_uri, "r5", str(tmp_path / "d"), lease_ttl=30).acquire()  # no renewal before the check
    try:
        lease = _lease(s3, "runs/r5")
        s3.put_object(Bucket=BUCKET, Key=f"runs/r5/{runlock.LEASE_FILE}",
                      Body=json.dumps({**lease, "token": "usurper", "host": "other.example"}))
        with pytest.raises(RunLockedError, match="lost its lease"):
            lock.check()  # at once, before any renewal noticed
        assert lock.lost
    finally:
        lock.release()


def test_a_writer_that_lost_its_lease_publishes_nothing(s3, tmp_path):
    import pyarrow as pa

    run_uri = f"s3://{BUCKET}/runs/r6"
    runlock.hold(run_uri, "r6", str(tmp_path / "e"), lease_ttl=30)
    try:
        lease = _lease(s3, "runs/r6")
        s3.put_object(Bucket=BUCKET, Key=f"runs/r6/{runlock.LEASE_FILE}",
                      Body=json.dumps({**lease, "token": "usurper", "host": "other.example"}))
        with pytest.raises(RunLockedError, match="lost its lease"):
            mf.publish(pa.table({"x": [1]}), f"{run_uri}/.clips.tmp-1", f"{run_uri}/clips", stage="clips",
                       config_hash="c", inputs=[], code_version="v", started=time.time())
        assert mf.load_success(f"{run_uri}/clips") is None
    finally:
        runlock.release(run_uri)
