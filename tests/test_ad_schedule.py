"""Properties of the AD diffusion-forcing schedule (models/ad_schedule.py, report section 3.4.2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from models.ad_schedule import NOT_STARTED_TIMESTEP, plan_ad_schedule, plan_windows


@st.composite
def schedules(draw, multiple_of_block: bool = False):
    block = draw(st.integers(1, 6))
    frames = draw(st.integers(1, 40))
    if multiple_of_block:
        frames = block * draw(st.integers(1, 8))
    prefix = draw(st.integers(0, frames))
    if multiple_of_block:
        prefix -= prefix % block
    steps = draw(st.integers(1, 12))
    ar_step = draw(st.integers(0, 15))
    return dict(num_steps=steps, num_frames=frames, block_size=block, ar_step=ar_step, num_clean_prefix=prefix)


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_each_frame_gets_the_full_step_sequence_once_in_order(kw):
    sched = plan_ad_schedule(**kw)
    steps, prefix = kw["num_steps"], kw["num_clean_prefix"]
    for f in range(kw["num_frames"]):
        taken = sched.step_index[sched.update_mask[:, f], f]
        expected = [] if f < prefix else list(range(1, steps + 1))
        assert taken.tolist() == expected  # no tail frame dropped, even for a partial last block
    assert not sched.update_mask[:, :prefix].any()
    if sched.num_rows:
        assert (sched.step_index[-1, prefix:] >= steps).all()  # ends exactly when the last step is taken
        assert sched.step_index[-1, -1] == steps


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_earlier_frames_are_never_noisier(kw):
    sched = plan_ad_schedule(**kw)
    template = np.linspace(999, 10, kw["num_steps"]).round().astype(np.int64)
    t = sched.timesteps(template)
    assert (np.diff(t, axis=1) >= 0).all()  # timestep non-decreasing along frames within each row
    assert (np.diff(sched.step_index, axis=0) >= 0).all()  # and no frame ever goes back
    assert set(t[~sched.update_mask].tolist()) <= {0, NOT_STARTED_TIMESTEP}


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_ar_step_zero_is_synchronous(kw):
    sched = plan_ad_schedule(**{**kw, "ar_step": 0})
    live = sched.step_index[:, kw["num_clean_prefix"]:]
    if live.size:
        assert sched.num_rows == kw["num_steps"]
        assert (live == live[:, :1]).all()


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_active_spans_are_contiguous_updates(kw):
    sched = plan_ad_schedule(**kw)
    for (lo, hi), mask in zip(sched.active_spans, sched.update_mask, strict=True):
        assert mask[lo:hi].all() and not mask[:lo].any() and not mask[hi:].any()


def test_async_lag_and_partial_last_block():
    sched = plan_ad_schedule(num_steps=3, num_frames=7, block_size=3, ar_step=2)
    assert sched.blocks == [(0, 3), (3, 6), (6, 7)]
    assert sched.step_index[:, [0, 3, 6]].tolist() == [
        [1, 0, 0], [2, 0, 0], [3, 1, 0], [4, 2, 0], [4, 3, 1], [4, 4, 2], [4, 4, 3]]


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="block_size"):
        plan_ad_schedule(4, 10, block_size=0)
    with pytest.raises(ValueError, match="num_clean_prefix"):
        plan_ad_schedule(4, 10, num_clean_prefix=11)
    with pytest.raises(ValueError, match="template"):
        plan_ad_schedule(4, 10).timesteps([1, 2])


def _diffusers_matrix(kw, template):
    import torch
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    # The method does not use the pipeline instance; base window = whole window, as the pipeline calls it.
    return SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix(
        None, kw["num_frames"], torch.tensor(template), kw["num_frames"], kw["ar_step"],
        kw["num_clean_prefix"], kw["block_size"])


@settings(max_examples=150, deadline=None)
@given(schedules(multiple_of_block=True))
def test_equals_diffusers_where_it_is_well_defined(kw):
    assume(kw["num_clean_prefix"] < kw["num_frames"])  # diffusers fails on an all-clean window
    template = np.linspace(999, 10, kw["num_steps"]).round().astype(np.int64)
    step_matrix, step_index, update_mask, valid = _diffusers_matrix(kw, template)
    sched = plan_ad_schedule(**kw)
    assert sched.step_index.tolist() == step_index.tolist()
    assert sched.update_mask.tolist() == update_mask.tolist()
    assert sched.timesteps(template).tolist() == step_matrix.tolist()
    assert sched.valid_windows == list(valid)


def test_diffusers_drops_tail_frames_we_do_not():
    kw = dict(num_steps=4, num_frames=12, block_size=5, ar_step=1, num_clean_prefix=0)
    _, _, update_mask, _ = _diffusers_matrix(kw, np.array([999, 750, 500, 250]))
    assert update_mask.shape[1] == 10  # diffusers issue 13609: frames 10 and 11 are never denoised
    assert plan_ad_schedule(**kw).update_mask[:, 10:].sum(axis=0).tolist() == [4, 4]


def test_long_video_windows_cover_every_frame_once():
    # 4x a 25-latent-frame base window with overlap 17 pixel frames -> 5 latent frames, blocks of 5
    windows = plan_windows(97, 25, 5, block_size=5)
    assert [(w.video_start, w.num_frames, w.num_clean_prefix) for w in windows] == [
        (0, 25, 0), (20, 25, 5), (40, 25, 5), (60, 25, 5), (80, 17, 5)]
    covered = [f for i, w in enumerate(windows) for f in range(w.video_start + (w.keep_from if i else 0),
                                                               w.video_start + w.num_frames)]
    assert covered == list(range(97))
    assert plan_windows(9, 25, 5) == plan_windows(9, 25, 5, block_size=4)  # short video: one window
    assert plan_windows(60, 25, 6, block_size=4)[1].num_clean_prefix == 4  # whole blocks of history only


@settings(max_examples=150, deadline=None)
@given(schedules())
def test_clean_suffix_is_a_condition_that_leaves_the_rest_unchanged(kw):
    # End-frame control: a frame appended after the window is clean (timestep 0) at every row and never
    # stepped; the frames before it keep exactly the schedule they would have without it.
    assume(kw["num_clean_prefix"] < kw["num_frames"])
    plain = plan_ad_schedule(**kw)
    with_end = plan_ad_schedule(**{**kw, "num_frames": kw["num_frames"] + 1}, num_clean_suffix=1)
    assert with_end.step_index[:, :-1].tolist() == plain.step_index.tolist()
    assert with_end.update_mask[:, :-1].tolist() == plain.update_mask.tolist()
    assert not with_end.update_mask[:, -1].any()
    template = np.linspace(999, 10, kw["num_steps"]).round().astype(np.int64)
    assert (with_end.timesteps(template)[:, -1] == 0).all()
    assert with_end.blocks == plain.blocks + [(kw["num_frames"], kw["num_frames"] + 1)]
    with pytest.raises(ValueError, match="must leave frames to generate"):
        plan_ad_schedule(kw["num_steps"], kw["num_clean_prefix"] + 1, num_clean_prefix=kw["num_clean_prefix"],
                         num_clean_suffix=1)
