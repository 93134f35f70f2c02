"""Reward model (report section 3.4.1): tiny random Qwen2.5-VL backbone + scalar head, video only; seeded,
shaped, saved and loaded; a short BTT training separates static from moving clips on held-out pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.reward_loss import A_BETTER, B_BETTER, btt_loss, pairwise_accuracy
from models.reward_model import RewardModel, build_tiny_reward_model


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared: two threads thrash under load
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("reward"))
    build_tiny_reward_model(folder)  # builds the backbone folder once for the module
    return folder


def clip(rng: np.random.Generator, moving: bool, frames: int = 8, size: int = 56) -> torch.Tensor:
    """(T, 3, H, W) float in [0, 1]: a random blocky texture, still or panning 6-12 pixels per frame."""
    texture = torch.tensor(rng.random((3, size // 4, size // 4)), dtype=torch.float32)
    texture = texture.repeat_interleave(4, 1).repeat_interleave(4, 2)
    speed = int(rng.integers(6, 13)) if moving else 0
    return torch.stack([torch.roll(texture, t * speed, dims=2) for t in range(frames)])


def pairs(rng: np.random.Generator, count: int):
    """Moving (motion present) is preferred to static; which side holds it is random."""
    a, b, labels = [], [], []
    for _ in range(count):
        moving_first = bool(rng.random() < 0.5)
        first, second = clip(rng, moving_first), clip(rng, not moving_first)
        a.append(first)
        b.append(second)
        labels.append(A_BETTER if moving_first else B_BETTER)
    return torch.stack(a), torch.stack(b), torch.tensor(labels)


def test_scores_are_seeded_and_shaped(tiny_folder):
    frames = torch.rand(3, 8, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    first, again = build_tiny_reward_model(tiny_folder, seed=0), build_tiny_reward_model(tiny_folder, seed=0)
    scores = first.score(frames)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert torch.equal(scores, again.score(frames)) and torch.equal(scores, first.score(frames))
    assert not torch.equal(scores, build_tiny_reward_model(tiny_folder, seed=1).score(frames))
    mixed = first.score([frames[0], frames[1, :4, :, :40], (frames[2] * 255).byte()])  # list, padded batch
    assert mixed.shape == (3,)
    assert mixed[0].item() == pytest.approx(scores[0].item(), abs=1e-5)  # padding does not leak
    assert mixed[2].item() == pytest.approx(scores[2].item(), abs=1e-2)  # uint8 input: the same clip, rounded


def test_no_prompt_in_the_input(tiny_folder):
    model = build_tiny_reward_model(tiny_folder)
    ids = model.prepare(torch.rand(1, 4, 3, 56, 56))["input_ids"][0]
    text = model.tokenizer.decode(ids[ids != model.video_pad])
    assert text == "<|im_start|>user\n<|vision_start|><|vision_end|><|im_end|>\n"


def test_save_and_load_round_trip(tiny_folder, tmp_path):
    model = build_tiny_reward_model(tiny_folder, seed=3)
    with torch.no_grad():
        model.head.bias.fill_(0.25)
    frames = torch.rand(2, 4, 3, 56, 56)
    loaded = RewardModel.load(model.save(str(tmp_path / "rm")))
    assert torch.allclose(loaded.score(frames), model.score(frames), atol=1e-6)
    assert loaded.cfg == model.cfg


def test_btt_training_separates_static_from_moving_clips(tiny_folder):
    torch.manual_seed(0)
    model = build_tiny_reward_model(tiny_folder, seed=0).train()
    rng = np.random.default_rng(0)
    test_a, test_b, test_label = pairs(rng, 32)  # held out: textures and speeds never trained on
    before = pairwise_accuracy(model.score(test_a), model.score(test_b), test_label, tie_margin=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(60):  # fresh pairs every step: the model must learn motion, not memorise textures
        train_a, train_b, train_label = pairs(rng, 16)
        # no tie labels here, so the theta -> 1 limit (plain Bradley-Terry) of the BTT loss
        loss = btt_loss(model(model.prepare(train_a)), model(model.prepare(train_b)), train_label, log_theta=0.0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    after = pairwise_accuracy(model.score(test_a), model.score(test_b), test_label, tie_margin=0.0)
    assert after["accuracy_excl_ties"] >= 0.9, (before, after, loss.item())
