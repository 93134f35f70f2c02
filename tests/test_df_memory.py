"""Infinite length (issue 6 item 5): memory stays flat however many windows a generation runs.

`DFSampler.stream` keeps only the history the next window re-reads and decodes each window as it finishes,
so the tensors alive between windows do not grow with the video. Measured exactly, as the bytes of every
live tensor that is not a model weight, and loosely as the process RSS.
"""

from __future__ import annotations

import gc
import resource

import numpy as np
import pytest
import torch
from df_reference import make_cfg

from models.checkpoint import init_checkpoint, load_pipeline_components
from models.df_sampler import DFSampler

torch.set_num_threads(2)
# 12 windows of 5 latent frames that re-read 2: 36 latent frames, 141 pixel frames.
SETTINGS = dict(num_frames=141, base_num_frames=17, overlap_history=5, ar_step=1, causal_block_size=1,
                num_inference_steps=2, addnoise_condition=20)


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    return DFSampler(load_pipeline_components(init_checkpoint("tiny", str(tmp_path_factory.mktemp("c") / "df"))))


def live_tensor_bytes(exclude: set[int]) -> int:
    """Bytes of the distinct storages of all live tensors, model weights excluded."""
    storages = {}
    for obj in gc.get_objects():
        if type(obj) is torch.Tensor and not obj.is_meta:  # noqa: E721 (exact type: no lazy module proxies)
            storage = obj.untyped_storage()
            if storage.data_ptr() not in exclude:
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def weights(sampler: DFSampler) -> set[int]:
    modules = (sampler.transformer, sampler.vae, sampler.text_encoder)
    return {t.untyped_storage().data_ptr() for m in modules for t in [*m.parameters(), *m.buffers()]}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def per_window(sampler: DFSampler, keep: bool) -> tuple[list[int], list[int], int]:
    """Live tensor bytes and RSS after each window; `keep` holds every chunk, as an in-memory caller would."""
    exclude, kept, live, rss, frames = weights(sampler), [], [], [], 0
    for chunk, pixels in sampler.stream(make_cfg(**SETTINGS)):
        frames += len(pixels)
        if keep:
            kept.append(chunk)
        del chunk, pixels
        live.append(live_tensor_bytes(exclude))
        rss.append(rss_bytes())
        assert sampler.layout.kv is None  # the KV cache lives within one window
    return live, rss, frames


def test_memory_is_flat_across_windows(sampler):
    live, rss, frames = per_window(sampler, keep=False)
    assert len(live) == 12 and frames == SETTINGS["num_frames"]
    # Exact: from the second window on, no more tensor bytes are alive than after it (the last window is
    # shorter, so it may hold fewer).
    assert max(live[1:]) == live[1], live
    # Loose, whole process: RSS settles after the first windows (allocator noise of a few MB allowed).
    assert rss[-1] - rss[2] < 16 * 2**20, np.diff(rss)


def test_the_measure_sees_a_growing_video(sampler):
    # Positive control: keeping every window's latents (what `generate` does) grows by each window's new
    # frames, 3 latent frames of 16 x 4 x 4 floats, and the measure sees exactly that.
    live, _, _ = per_window(sampler, keep=True)
    growth = np.diff(live[1:-1])
    assert (growth == 3 * 16 * 4 * 4 * 4).all(), growth
