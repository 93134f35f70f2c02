"""The score stage's fast paths give exactly what the straightforward code gave (outputs must not move)."""

from __future__ import annotations

import av
import numpy as np

from benchmarks.throughput import derived, pool
from infra.config_filters import DecodeConfig
from tasks.curate.filters.black import black_frames, longest_run
from tasks.curate.filters.frames import frames_from_arrays


def test_black_frames_count_equals_the_99th_percentile_partition():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n, h, w = int(rng.integers(1, 12)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
        frames = rng.integers(0, 256 if trial % 2 else 40, (n, h, w)).astype(np.uint8)
        luma_max = float(rng.integers(0, 50))
        flat = frames.reshape(n, -1)
        k = int(0.99 * (flat.shape[1] - 1))
        expected = np.partition(flat, k, axis=1)[:, k] < luma_max
        assert np.array_equal(black_frames(frames, luma_max), expected)


def test_longest_run_matches_a_plain_scan():
    rng = np.random.default_rng(1)
    for _ in range(200):
        mask = rng.random(int(rng.integers(0, 30))) < rng.random()
        best = run = 0
        for value in mask:
            run = run + 1 if value else 0
            best = max(best, run)
        assert longest_run(mask) == best


def test_shared_scaling_context_gives_the_pixels_of_a_fresh_one_per_frame():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (9, 90, 160, 3)).astype(np.uint8)
    cfg = DecodeConfig(sample_fps=8, analysis_width=128, thumb_width=48)
    clip = frames_from_arrays(rgb, 24.0, cfg)
    frames = [av.VideoFrame.from_ndarray(f, format="rgb24") for f in rgb]
    thumbs = np.stack([f.reformat(width=48, height=28, format="gray", interpolation="AREA").to_ndarray() for f in frames])
    assert np.array_equal(clip.thumbs, thumbs)
    picked = [frames[i] for i in clip.sample_index]
    assert np.array_equal(clip.samples, np.stack([f.reformat(width=128, height=72, format="rgb24", interpolation="AREA")
                                                   .to_ndarray() for f in picked]))
    assert np.array_equal(clip.luma, np.stack([f.reformat(width=128, height=72, format="gray", interpolation="AREA")
                                               .to_ndarray() for f in picked]))


def test_throughput_pool_and_ratios():
    base = [{"clip_id": "a"}, {"clip_id": "b"}]
    assert [c["clip_id"] for c in pool(base, 5)] == ["a-0", "b-1", "a-2", "b-3", "a-4"]
    run = {"clips_per_s": 2.0, "clips_per_cpu_s": 4.0}
    r = {"decode": {"clips_per_s": 20.0, "clips_per_cpu_s": 40.0}, "decode_rgb": {"clips_per_s": 10.0, "clips_per_cpu_s": 16.0},
         "score": {**run, "digest": "x"}, "score_ref": {"clips_per_s": 1.0, "clips_per_cpu_s": 1.0, "digest": "y"}}
    d = derived(r)
    assert d["score_over_decode_rgb_cpu"] == 0.25 and d["score_speedup_cpu"] == 4.0
    assert d["score_outputs_identical_to_reference"] is False
