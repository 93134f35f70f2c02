"""Storage and manifests against S3 (a moto server on 127.0.0.1 started by the test)."""

import os

import pyarrow as pa
import pytest
from s3_server import moto_s3

from infra import manifest as mf
from infra import storage


@pytest.fixture
def s3(monkeypatch):
    with moto_s3(monkeypatch) as (endpoint, client):
        storage.configure_storage(endpoint)
        yield endpoint, client
    storage.configure_storage(None)
    monkeypatch.delenv("REELFLOW_S3_ENDPOINT_URL", raising=False)


def test_list_copy_upload_roundtrip(s3, tmp_path):
    _, client = s3
    client.put_object(Bucket="reelflow-test", Key="raw/b.mp4", Body=b"bbb")
    client.put_object(Bucket="reelflow-test", Key="raw/a.mp4", Body=b"aaaa")
    assert storage.list_files("s3://reelflow-test/raw") == ["s3://reelflow-test/raw/a.mp4", "s3://reelflow-test/raw/b.mp4"]
    assert storage.size("s3://reelflow-test/raw/a.mp4") == 4
    with storage.local_copy("s3://reelflow-test/raw/a.mp4") as path:
        assert open(path, "rb").read() == b"aaaa"
    assert not os.path.exists(path), "temporary download must be removed"
    local = tmp_path / "c.bin"
    local.write_bytes(b"ccc")
    storage.upload(str(local), "s3://reelflow-test/out/c.bin")
    assert client.get_object(Bucket="reelflow-test", Key="out/c.bin")["Body"].read() == b"ccc"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        storage.list_files("s3://reelflow-test/nothing-here")


def test_manifest_publish_on_s3_commits_with_marker_last(s3):
    table = pa.table({"clip_id": ["a", "b"], "error": pa.array([None, "x"], pa.string())})
    final = "s3://reelflow-test/runs/r1/clips"
    tmp = mf.tmp_dir_for(final)
    storage.write_text(storage.join(tmp, "clip.mp4"), "payload")
    m = mf.publish(table, tmp, final, stage="clips", config_hash="h", inputs=[], code_version="v", started=0.0)
    assert m.error_count == 1 and mf.load_success(final) == m
    assert list(mf.read_table(m)["clip_id"]) == ["a", "b"]
    assert storage.read_text(storage.join(final, "clip.mp4")) == "payload"
    assert not storage.exists(tmp)
