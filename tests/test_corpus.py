"""The synthetic corpus is the yardstick of every later stage: its truth must match its pixels."""

from __future__ import annotations

import os
import re

import av
import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from infra.config import CorpusConfig
from tasks.corpus import generate_corpus, generate_video, load_truth
from tasks.corpus.lib import films as gen
from tasks.corpus.lib.defects import WORDS
from tasks.corpus.lib.truth import VideoTruth, truth_path

SMALL = CorpusConfig(videos=2, seed=7, width=160, height=90)
DEFECTIVE = SMALL.model_copy(update={"defect_rate": 1.0})


def decode(path: str) -> list[np.ndarray]:
    with av.open(path) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    return generate_corpus(str(tmp_path_factory.mktemp("corpus")), SMALL, progress=False)


@pytest.fixture(scope="module")
def defective(tmp_path_factory) -> tuple[str, VideoTruth]:
    """A film whose plan holds black, frozen and subtitle defects and a flash (searched by seed)."""
    wanted = {"black", "frozen", "subtitle"}
    for seed in range(300):
        truth = gen.plan_video("defective", seed, DEFECTIVE).truth
        if wanted <= {d.kind for d in truth.defects} and any(h.kind == "flash" for h in truth.hard_negatives):
            out = str(tmp_path_factory.mktemp("defective"))
            generate_video("defective", seed, DEFECTIVE, out)
            return os.path.join(out, "defective.mp4"), truth
    pytest.fail("no seed under 300 plans black + frozen + subtitle + flash")


def test_files_and_frame_count(corpus):
    for path in corpus:
        truth = load_truth(path)
        frames = decode(path)
        assert len(frames) == truth.num_frames
        assert frames[0].shape == (truth.height, truth.width, 3)
        cap = cv2.VideoCapture(path)  # OpenCV (PySceneDetect's default backend) agrees
        count = 0
        while cap.read()[0]:
            count += 1
        assert count == truth.num_frames
    names = sorted(os.listdir(os.path.dirname(corpus[0])))
    assert names == ["film_0000.mp4", "film_0000.truth.json", "film_0001.mp4", "film_0001.truth.json"]


def test_shots_and_transitions_tile_the_film(corpus):
    for path in corpus:
        truth = load_truth(path)
        assert [s.index for s in truth.shots] == list(range(len(truth.shots)))
        assert len(truth.transitions) == len(truth.shots) - 1
        pos = 0
        for shot, tr in zip(truth.shots, truth.transitions + [None], strict=True):
            assert shot.start_frame == pos and shot.end_frame - shot.start_frame >= truth.fps  # >= 1 s clean
            pos = shot.end_frame
            if tr is not None:
                assert tr.start_frame == pos
                if tr.kind == "cut":
                    assert tr.end_frame == tr.start_frame
                else:
                    assert 3 <= tr.end_frame - tr.start_frame <= 24
                pos = tr.end_frame
        assert pos == truth.num_frames
        assert all(s.category == s.subjects[0].category and s.subjects[0].is_main for s in truth.shots)


def test_same_seed_same_film(corpus, tmp_path):
    truth = load_truth(corpus[0])
    again = generate_video(truth.video_id, truth.seed, SMALL, str(tmp_path))
    assert again == truth
    with open(truth_path(corpus[0]), "rb") as a, open(tmp_path / "film_0000.truth.json", "rb") as b:
        assert a.read() == b.read()
    assert all(np.array_equal(x, y) for x, y in zip(decode(corpus[0]), decode(str(tmp_path / "film_0000.mp4")), strict=True))
    assert gen.plan_video("film_0000", truth.seed + 1, SMALL).truth != truth


def test_cut_is_a_real_visual_change(corpus):
    for path in corpus:
        truth = load_truth(path)
        gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.int16) for f in decode(path)]
        diff = [0.0] + [float(np.abs(gray[i] - gray[i - 1]).mean()) for i in range(1, len(gray))]
        within = np.median([diff[i] for s in truth.shots for i in range(s.start_frame + 1, s.end_frame)])
        for cut in (t.start_frame for t in truth.transitions if t.kind == "cut"):
            assert diff[cut] > 4 * within, (path, cut, diff[cut], within)


def test_category_skew_like_the_report():
    cats = [s.category for seed in range(40) for s in gen.plan_video("x", seed, SMALL).truth.shots]
    assert len(cats) >= 200
    assert 0.75 <= cats.count("human") / len(cats) <= 0.92
    assert len(set(cats)) >= 4


def test_planted_frames_are_what_truth_says(defective):
    path, truth = defective
    frames = decode(path)
    for d in truth.defects:
        seg = frames[d.start_frame:d.end_frame]
        if d.kind == "black":
            assert all(f.max() <= 8 for f in seg)
            assert frames[d.start_frame - 1].mean() > 10 and frames[d.end_frame].mean() > 10
        elif d.kind == "frozen":
            assert all(np.array_equal(f, seg[0]) for f in seg)
            assert not np.array_equal(frames[d.end_frame], seg[0])
        elif d.kind == "subtitle":
            words = re.findall(r"[A-Za-z']+", d.text)
            assert words and all(w.lower() in WORDS for w in words)
            x, y, w, h = d.box
            assert 0 <= x and x + w <= truth.width and 0 <= y and y + h <= truth.height
            assert (seg[len(seg) // 2][y:y + h, x:x + w] > 200).all(axis=2).any()  # white glyphs drawn
    for h in truth.hard_negatives:
        if h.kind == "flash":
            assert frames[h.start_frame].mean() > frames[h.start_frame - 1].mean() + 40


def test_planted_events_keep_clear_of_transitions():
    margin = gen.margin_frames(SMALL.fps)
    for seed in range(30):
        truth = gen.plan_video("x", seed, DEFECTIVE).truth
        clean = [(s.start_frame, s.end_frame) for s in truth.shots]
        events = [d for d in truth.defects if d.kind in ("black", "frozen")]
        events += [h for h in truth.hard_negatives if h.kind != "fast_pan"]
        for e in events:
            assert any(s + margin <= e.start_frame and e.end_frame <= t - margin for s, t in clean), (seed, e)
        for d in truth.defects:
            assert 0 <= d.start_frame < d.end_frame <= truth.num_frames
        for h in truth.hard_negatives:
            assert any(s <= h.start_frame and h.end_frame <= t for s, t in clean)
        for s in truth.shots:
            if s.duplicate_of:
                original = int(s.duplicate_of.split(":")[1])
                assert s.index - original >= 2 and truth.shots[original].camera == s.camera


def test_crash_leaves_no_partial_film(tmp_path, monkeypatch):
    def broken(plan):
        yield from list(gen.render_video(plan))[:5]
        raise RuntimeError("killed mid-film")

    monkeypatch.setattr(gen, "render_video", broken)
    with pytest.raises(RuntimeError):
        generate_video("film_0000", 1, SMALL, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_bad_ranges_fail_early():
    with pytest.raises(ValidationError, match="shots_per_video"):
        CorpusConfig(shots_per_video=(5, 3))


def test_a_take_logo_stays_in_the_picture_between_bars():
    """A per-shot logo is burned into the take: with letterbox/pillarbox bars it sits in the picture's
    corner, where it can be seen, not under a bar (the truth would claim an invisible logo)."""
    cfg = CorpusConfig(videos=30, seed=21, defect_rate=0.6)
    checked = 0
    for i in range(30):
        plan = gen.plan_video(gen.video_id_for(i), gen.video_seed_for(21, i), cfg)
        bars = [p.defect.box for p in plan.planted if p.defect.kind in ("letterbox", "pillarbox")]
        logos = [p.defect for p in plan.planted if p.defect.kind == "logo" and p.shot is not None]
        if not (bars and logos):
            continue
        (px, py, pw, ph), frames = bars[0], list(gen.render_video(plan))
        for d in logos:
            x, y, w, h = d.box
            assert px <= x and x + w <= px + pw and py <= y and y + h <= py + ph, (i, d.box, bars[0])
            assert frames[(d.start_frame + d.end_frame) // 2][y:y + h, x:x + w].max() > 200  # drawn, lit
        checked += 1
    assert checked >= 2
