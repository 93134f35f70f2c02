"""The real-content set's builder (benchmarks/realset): deterministic plans, truth in the corpus schema
whose frames hold in the encoded film (black runs black, freezes frozen, cuts at their frames), and the
reserved package refused. Photographs here are generated textures: the Debian packages are fetched only
by the benchmarks."""

from __future__ import annotations

import os
import sys

import av
import cv2
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.realset.build import render_film  # noqa: E402
from benchmarks.realset.plan import plan_film  # noqa: E402
from benchmarks.realset.sources import fetch_packages  # noqa: E402
from tasks.corpus.lib.films import encode_mp4  # noqa: E402

SEED = 37  # 840 frames, 10 boundaries, a black segment between cuts, a freeze, a flash and an occluder


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    folder = tmp_path_factory.mktemp("realset")
    rng = np.random.default_rng(0)
    photos = []
    for k in range(12):
        field = cv2.resize(rng.random((6, 10, 3)).astype(np.float32), (1000, 600), interpolation=cv2.INTER_CUBIC)
        image = np.clip(field * 255 * rng.uniform(0.5, 1, 3) + rng.normal(0, 6, (600, 1000, 3)), 0, 255).astype(np.uint8)
        photos.append(str(folder / f"{k:02d}.png"))
        cv2.imwrite(photos[-1], image)
    plan = plan_film("real_0000", SEED, photos, [(1000, 600)] * 12, 320, 180, 24.0)
    images = {k: cv2.imread(p) for k, p in enumerate(photos)}
    path = str(folder / "real_0000.mp4")
    repeats = [(a, b) for a, b, _ in plan.freezes] + [(d.start_frame, d.end_frame) for d in plan.truth.defects if d.kind == "black"]
    assert encode_mp4(render_film(plan, images), path, 320, 180, 24.0, repeats) == plan.truth.num_frames
    with av.open(path) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return plan, photos, frames


def test_a_plan_is_a_pure_function_of_its_seed(film):
    plan, photos, _ = film
    again = plan_film("real_0000", SEED, photos, [(1000, 600)] * 12, 320, 180, 24.0)
    assert again.truth.model_dump_json() == plan.truth.model_dump_json()
    other = plan_film("real_0000", SEED + 1, photos, [(1000, 600)] * 12, 320, 180, 24.0)
    assert other.truth.model_dump_json() != plan.truth.model_dump_json()


def test_shots_transitions_and_black_segments_tile_the_film(film):
    plan, _, frames = film
    truth = plan.truth
    assert len(frames) == truth.num_frames
    spans = [(s.start_frame, s.end_frame, "shot") for s in truth.shots]
    spans += [(t.start_frame, t.end_frame, t.kind) for t in truth.transitions if t.kind != "cut"]
    cuts = {t.start_frame for t in truth.transitions if t.kind == "cut"}
    blacks = [(d.start_frame, d.end_frame, "black") for d in truth.defects if d.kind == "black" and d.start_frame in cuts]
    assert blacks and all(b in cuts for _, b, _ in blacks)  # a black segment: a cut at each edge
    covered = sorted(spans + blacks)
    assert covered[0][0] == 0 and covered[-1][1] == truth.num_frames
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False)), covered
    for s, e, _ in blacks:
        assert frames[s:e].max() <= 16  # decoded black
        assert frames[s - 1].mean() > 30 and frames[e].mean() > 30  # cut to black and cut in, no fade


def test_freezes_and_overlays_hold_in_the_decoded_frames(film):
    plan, _, frames = film
    frozen = [d for d in plan.truth.defects if d.kind == "frozen"]
    assert frozen
    for d in frozen:
        held = frames[d.start_frame : d.end_frame].astype(np.int16)
        assert np.abs(held - held[0]).max() <= 2, "frozen frames decode identical"
        assert np.abs(frames[d.start_frame - 3].astype(np.int16) - held[0]).mean() > 0.5  # moving before it
    for d in plan.truth.defects:
        if d.kind == "subtitle":  # white text with a dark outline inside its box
            x, y, w, h = d.box
            patch = frames[(d.start_frame + d.end_frame) // 2, y : y + h, x : x + w]
            assert (patch.min(-1) > 225).mean() > 0.01 and (patch.max(-1) < 50).mean() > 0.01
    kinds = {h.kind for h in plan.truth.hard_negatives}
    assert {"flash", "crossing_object"} <= kinds


def test_the_reserved_package_is_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        fetch_packages(str(tmp_path), ("gnome-backgrounds", "mate-backgrounds"))
