"""Every input accounted for: each entry of a hostile input folder (34 kinds) becomes a row or a
counted skip with its reason, nothing is fatal, and what is good keeps its facts as displayed."""

import os

import numpy as np
import pyarrow as pa
import pytest
from bad_inputs import _frame, build

from infra.config import ClipsConfig, IngestConfig, SegmentConfig
from infra.inputs import list_inputs
from infra.video import iter_frames, probe_video
from tasks.curate.clips import cut_clips
from tasks.curate.ingest import SOURCES_SCHEMA, mark_duplicates, probe_source
from tasks.curate.segment import segment_video

CFG = IngestConfig()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bad") / "input")
    return root, build(root)


def _account(root: str) -> dict[str, dict]:
    listing = list_inputs(root, CFG.extensions, CFG.image_extensions)
    rows = [probe_source(u, CFG) for u in sorted(listing.videos + listing.images)]
    table = mark_duplicates(pa.Table.from_pylist(rows, schema=SOURCES_SCHEMA))
    got = {r["source_uri"]: r for r in table.to_pylist()}
    for skip in listing.skipped:
        assert skip["uri"] not in got
        got[skip["uri"]] = skip
    assert listing.entries == len(got)
    return got


def test_every_entry_is_a_row_or_a_counted_skip(corpus):
    root, expected = corpus
    assert len(expected) >= 25
    got = _account(root)
    assert set(got) == set(expected), "every entry accounted for, nothing invented"
    for uri, want in expected.items():
        entry = got[uri]
        if want.kind == "skip":
            assert entry.get("reason") == want.detail, uri
        elif want.kind == "row":
            assert "source_id" in entry, uri
        elif want.kind == "error":
            assert entry["error"] and want.detail in entry["error"], (uri, entry["error"])
        else:
            assert entry["error"] is None, (uri, entry["error"])
            assert (entry["media"], f"{entry['width']}x{entry['height']}") == (want.kind, want.detail), uri


def test_a_dangling_link_as_the_whole_input_is_a_skip_not_a_crash(tmp_path):
    os.symlink(tmp_path / "gone.mp4", tmp_path / "only.mp4")
    listing = list_inputs(str(tmp_path / "only.mp4"), CFG.extensions, CFG.image_extensions)
    assert [s["reason"][:13] for s in listing.skipped] == ["dangling link"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_inputs(str(tmp_path / "nothing"), CFG.extensions, CFG.image_extensions)


def test_metadata_sidecars_are_counted_quietly_and_unknown_files_warn(tmp_path, caplog):
    from infra import inputs

    for name in ("truth.json", "data.parquet", "notes.txt", "film.srt", "mystery.bin"):
        (tmp_path / name).write_bytes(b"x")
    listing = list_inputs(str(tmp_path), (".mp4",), (".png",))
    assert listing.reasons() == {inputs.SIDECAR: 4, inputs.UNSUPPORTED: 1}
    with caplog.at_level("INFO", logger="reelflow.ingest"):
        inputs.log_skips(listing)
    levels = {r.levelname: r.getMessage() for r in caplog.records}
    assert "4 entries" in levels["INFO"] and "metadata" in levels["INFO"]
    assert "mystery.bin" in levels["WARNING"] and "unsupported" in levels["WARNING"]


def test_rotated_phone_video_is_cut_upright(corpus, tmp_path):
    """Stored 64x36 with a 90-degree display matrix: displayed 36x64 with the marker top-left."""
    root, _ = corpus
    path = os.path.join(root, "phone_rotated.mp4")
    probe = probe_video(path)
    assert (probe.width, probe.height, probe.rotation) == (36, 64, 90)
    source = {"source_id": "rot", "source_uri": path, "fps": 24.0, "width": 36, "height": 64, "error": None}
    shot = {"shot_id": "s", "start_frame": 0, "end_frame": 48, "fps": 24.0, "boundary_in_kind": "start",
            "boundary_out_kind": "end", "error": None}
    rows = cut_clips(source, [shot], ClipsConfig(crf=0, min_seconds=1, max_seconds=3), str(tmp_path), "f")
    clip = os.path.join(tmp_path, f"{rows[0]['clip_id']}.mp4")
    assert (probe_video(clip).width, probe_video(clip).height, probe_video(clip).rotation) == (36, 64, 0)
    first = next(f for _, f in iter_frames(clip))
    # The display matrix turns the stored picture 90 degrees counter-clockwise, so its top-left
    # marker lands bottom-left on screen (as any player shows it).
    upright = np.rot90(_frame(0, 64, 36), 1)
    assert np.abs(first.astype(int) - upright.astype(int)).mean() < 6
    assert first[-4:, :4].mean() > 200 and first[:4, :4].mean() < 200


def test_anamorphic_source_gets_square_pixels(corpus):
    root, _ = corpus
    frame = next(f for _, f in iter_frames(os.path.join(root, "anamorphic.mp4")))
    assert frame.shape == (36, 64, 3)


def test_image_sources_become_one_frame_clips_upright(corpus, tmp_path):
    root, _ = corpus
    cfg = ClipsConfig(crf=0)
    for name, size in (("photo.jpg", (64, 36)), ("phone_photo.jpg", (40, 80)), ("drawing.png", (50, 30))):
        row = probe_source(os.path.join(root, name), CFG)
        clips = cut_clips(row, [], cfg, str(tmp_path), "final")
        assert len(clips) == 1 and clips[0]["error"] is None and clips[0]["num_frames"] == 1
        assert clips[0]["media"] == "image"
        probe = probe_video(os.path.join(tmp_path, f"{clips[0]['clip_id']}.mp4"))
        assert (probe.width, probe.height, probe.num_frames) == size + (1,)
    broken = probe_source(os.path.join(root, "broken.jpg"), CFG)
    shots = segment_video(broken, SegmentConfig(use_transnet=False))  # the error row segment carries
    rows = cut_clips(broken, shots, cfg, str(tmp_path), "final")
    assert len(rows) == 1 and "corrupt or truncated image" in rows[0]["error"] and rows[0]["clip_uri"] is None
