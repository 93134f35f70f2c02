"""FoPP (report section 3.4.2): non-decreasing schedules, the anchor kept, DP counts, and uniform
completions given the anchor (chi-square against an enumerated case)."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from models.fopp import count_completions, log_completion_table, log_count_completions, sample_fopp


def brute_force_completions(num_frames: int, num_steps: int, anchor_frame: int, anchor_step: int) -> list[tuple]:
    return [s for s in itertools.product(range(num_steps), repeat=num_frames)
            if s[anchor_frame] == anchor_step and all(a <= b for a, b in itertools.pairwise(s))]


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 6), num_frames=st.integers(1, 30), num_steps=st.integers(1, 1200), seed=st.integers(0, 2**31))
def test_every_sample_is_non_decreasing_in_range(batch, num_frames, num_steps, seed):
    s = sample_fopp(batch, num_frames, num_steps, torch.Generator().manual_seed(seed))
    assert s.shape == (batch, num_frames) and s.dtype == torch.long
    assert (s.diff(dim=1) >= 0).all()
    assert s.min() >= 0 and s.max() < num_steps


@settings(max_examples=40, deadline=None)
@given(num_frames=st.integers(1, 25), num_steps=st.integers(1, 1000), seed=st.integers(0, 2**31), data=st.data())
def test_anchor_is_respected(num_frames, num_steps, seed, data):
    gen = torch.Generator().manual_seed(seed)
    frame = torch.tensor(data.draw(st.lists(st.integers(0, num_frames - 1), min_size=4, max_size=4)))
    step = torch.tensor(data.draw(st.lists(st.integers(0, num_steps - 1), min_size=4, max_size=4)))
    s = sample_fopp(4, num_frames, num_steps, gen, anchor_frame=frame, anchor_step=step)
    assert torch.equal(s[torch.arange(4), frame], step)
    assert (s.diff(dim=1) >= 0).all()


@pytest.mark.parametrize("num_frames,num_steps", [(1, 1), (1, 7), (3, 1), (4, 5), (5, 4), (3, 9)])
def test_dp_counts_equal_enumeration(num_frames, num_steps):
    for f, t in itertools.product(range(num_frames), range(num_steps)):
        expected = len(brute_force_completions(num_frames, num_steps, f, t))
        assert count_completions(num_frames, num_steps, f, t) == pytest.approx(expected, rel=1e-12)


def test_dp_table_matches_stars_and_bars_at_scale():
    # d[k][v] = C(k + T-1-v, k): multisets of k values out of T - v; the log-space DP stays exact to ~1e-12
    table = log_completion_table(24, 1000)
    for k, v in [(0, 0), (1, 999), (5, 10), (24, 0), (24, 500), (17, 999)]:
        assert table[k, v] == pytest.approx(math.log(math.comb(k + 999 - v, k)), rel=1e-12, abs=1e-12)
    assert np.isneginf(table[:, 1000]).all()
    assert log_count_completions(25, 1000, 12, 400) == pytest.approx(
        math.log(math.comb(12 + 599, 12) * math.comb(12 + 400, 12)), rel=1e-12)


def test_long_clips_do_not_overflow():
    s = sample_fopp(2, 400, 1000, torch.Generator().manual_seed(0))
    assert (s.diff(dim=1) >= 0).all()
    assert np.isfinite(log_count_completions(400, 1000, 0, 0))


@pytest.mark.parametrize("frame,step", [(1, 2), (3, 3), (0, 1)])  # both sides, only before, only after
def test_completions_are_uniform_given_the_anchor(frame, step):
    num_frames, num_steps = 4, 5
    valid = brute_force_completions(num_frames, num_steps, frame, step)  # (1, 2): 3 x C(4, 2) = 18 schedules
    draws = 36_000
    s = sample_fopp(draws, num_frames, num_steps, torch.Generator().manual_seed(1),
                    anchor_frame=torch.full((draws,), frame), anchor_step=torch.full((draws,), step))
    counts = Counter(map(tuple, s.tolist()))
    assert set(counts) <= set(valid)
    observed = [counts[v] for v in valid]
    assert chisquare(observed).pvalue > 1e-3


def test_anchors_are_uniform():
    # unconditionally, P(schedule) = sum over frames f of 1/(F T) / count(f, schedule[f]): the anchor is uniform
    s = sample_fopp(50_000, 3, 2, torch.Generator().manual_seed(2))
    valid = brute_force_completions(3, 2, 0, 0) + brute_force_completions(3, 2, 0, 1)
    expected = {v: sum(1 / 6 / len(brute_force_completions(3, 2, f, v[f])) for f in range(3)) for v in valid}
    counts = Counter(map(tuple, s.tolist()))
    assert chisquare([counts[v] for v in valid], [expected[v] * 50_000 for v in valid]).pvalue > 1e-3


def test_seeded_and_validated():
    a = sample_fopp(3, 10, 100, torch.Generator().manual_seed(5))
    b = sample_fopp(3, 10, 100, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        sample_fopp(1, 4, 5, anchor_frame=torch.tensor([4]), anchor_step=torch.tensor([0]))
    with pytest.raises(ValueError):
        sample_fopp(0, 4, 5)
