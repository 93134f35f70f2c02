"""tasks.curate.ingest: one row per file, content-derived ids, bad files recorded and never raised."""

import shutil

import numpy as np
import pyarrow as pa
import pytest
from s3_server import moto_s3

from infra import storage
from infra.config import IngestConfig
from infra.video import write_video
from tasks.curate.ingest import SOURCES_SCHEMA, list_sources, probe_source

CFG = IngestConfig()
BUCKET = "reelflow-ingest-test"  # its own bucket: moto keeps one in-process store across servers


def _write(path, n=30, shade=0):
    write_video((np.full((36, 64, 3), (shade + 3 * i) % 256, np.uint8) for i in range(n)), str(path), 24)
    return str(path)


@pytest.fixture
def good(tmp_path):
    return _write(tmp_path / "good.mp4")


def test_good_file_row(good):
    row = probe_source(good, CFG)
    assert list(row) == SOURCES_SCHEMA.names
    assert row["error"] is None and row["source_uri"] == good
    assert (row["codec"], row["width"], row["height"], row["fps"], row["num_frames"]) == (
        "h264",
        64,
        36,
        24.0,
        30,
    )
    assert row["duration_s"] == pytest.approx(30 / 24) and row["size_bytes"] > 0
    assert len(row["source_id"]) == 16
    assert pa.Table.from_pylist([row], schema=SOURCES_SCHEMA).num_rows == 1


def test_source_id_follows_content_not_name(tmp_path, good):
    moved = shutil.copy(good, tmp_path / "renamed.mov")
    other = _write(tmp_path / "other.mp4", shade=100)
    ids = [probe_source(p, CFG)["source_id"] for p in (good, str(moved), other)]
    assert ids[0] == ids[1] != ids[2]
    prefix_cfg = IngestConfig(hash_bytes=64)
    assert probe_source(good, prefix_cfg)["source_id"] == probe_source(str(moved), prefix_cfg)["source_id"]
    assert probe_source(good, prefix_cfg)["source_id"] != ids[0]


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("zero.mp4", b"", "empty file"),
        ("notes.mp4", b"not a video, just text\n" * 10, "not a video file"),
        ("cut.mp4", "half", "corrupt or truncated"),
    ],
)
def test_bad_files_become_error_rows(tmp_path, good, name, content, reason):
    path = tmp_path / name
    path.write_bytes(open(good, "rb").read()[:1500] if content == "half" else content)
    row = probe_source(str(path), CFG)
    assert reason in row["error"] and str(path) in row["error"]
    assert len(row["source_id"]) == 16 and row["size_bytes"] == len(path.read_bytes())
    assert (row["width"], row["num_frames"], row["fps"], row["codec"]) == (-1, -1, -1.0, None)
    assert pa.Table.from_pylist([row], schema=SOURCES_SCHEMA).num_rows == 1


def test_absurd_size_and_missing_file_are_rows(tmp_path, good):
    row = probe_source(good, IngestConfig(max_width=32, max_height=32))
    assert "absurd frame size 64x36" in row["error"] and row["num_frames"] == -1
    missing = probe_source(str(tmp_path / "gone.mp4"), CFG)
    assert "cannot read" in missing["error"] and missing["source_id"].startswith("uri-")


def test_one_frame_video_is_valid(tmp_path):
    row = probe_source(_write(tmp_path / "one.mp4", n=1), CFG)
    assert row["error"] is None and row["num_frames"] == 1


def test_list_sources_filters_and_sorts(tmp_path):
    for name in ("b.mp4", "a/c.MKV", "a/.partial.mp4", "notes.txt", "x.mp4.truth.json", "d.webm"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = list_sources(str(tmp_path), CFG)
    assert found == sorted(str(tmp_path / n) for n in ("a/c.MKV", "b.mp4", "d.webm"))
    assert list_sources(str(tmp_path / "b.mp4"), CFG) == [str(tmp_path / "b.mp4")]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_sources(str(tmp_path / "nowhere"), CFG)


def test_s3_listing_and_probe(monkeypatch, good):
    with moto_s3(monkeypatch, BUCKET) as (endpoint, client):
        storage.configure_storage(endpoint)
        try:
            client.put_object(Bucket=BUCKET, Key="raw/notes.txt", Body=b"x")
            storage.upload(good, f"s3://{BUCKET}/raw/b/film.mp4")
            assert list_sources(f"s3://{BUCKET}/raw/", CFG) == [f"s3://{BUCKET}/raw/b/film.mp4"]
            row = probe_source(f"s3://{BUCKET}/raw/b/film.mp4", CFG)
            assert row["error"] is None and row["num_frames"] == 30
            assert row["source_id"] == probe_source(good, CFG)["source_id"]
        finally:
            storage.configure_storage(None)
            monkeypatch.delenv("REELFLOW_S3_ENDPOINT_URL", raising=False)


def test_listing_key_follows_a_moved_run_store(tmp_path):
    """The synthetic corpus lives inside the run: a copied run store must resume ingest, not redo it."""
    from infra.inputs import list_inputs
    from tasks.curate.ingest import _listing_key

    cfg = IngestConfig()
    first = tmp_path / "a" / "run1"
    (first / "corpus").mkdir(parents=True)
    (first / "corpus" / "film_0000.mp4").write_bytes(b"\0" * 64)
    (first / "corpus" / ".hidden").write_text("x")
    second = tmp_path / "b" / "run1"
    shutil.copytree(first, second)

    def key(run):
        corpus = str(run / "corpus")
        return _listing_key(corpus, list_inputs(corpus, cfg.extensions, cfg.image_extensions), str(run))

    assert key(first) == key(second)
    (second / "corpus" / "film_0001.mp4").write_bytes(b"\0" * 64)
    assert key(first) != key(second)  # a changed listing still changes the key
