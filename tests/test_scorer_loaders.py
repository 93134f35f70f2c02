"""Quality scorers loading public checkpoint formats, each on a tiny checkpoint built here with exactly
the public key layout; the score is checked against one computed by hand (numpy, from the state dict)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.aesthetic import LAION_KEYS, AestheticScorer, LaionAestheticHead, load_head


def _laion_state(dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The improved-aesthetic-predictor's state dict: layers.{0,2,4,6,7}, sizes 1024/128/64/16/1."""
    g = torch.Generator().manual_seed(seed)
    sizes = [dim, 1024, 128, 64, 16, 1]
    state = {}
    for k, idx in enumerate((0, 2, 4, 6, 7)):
        state[f"layers.{idx}.weight"] = torch.randn(sizes[k + 1], sizes[k], generator=g) / sizes[k] ** 0.5
        state[f"layers.{idx}.bias"] = torch.randn(sizes[k + 1], generator=g) * 0.1
    return state


def _by_hand(state: dict, embedding: np.ndarray) -> float:
    """The LAION head is affine all the way (no activation; dropout is off at inference)."""
    x = embedding / np.linalg.norm(embedding)
    for idx in (0, 2, 4, 6, 7):
        x = state[f"layers.{idx}.weight"].double().numpy() @ x + state[f"layers.{idx}.bias"].double().numpy()
    return float(x[0])


def test_laion_head_loads_the_public_layout_strictly_and_scores_by_hand(tmp_path):
    state = _laion_state(768)
    assert sorted(state) == sorted(LAION_KEYS)
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(state, path)
    head = load_head(str(path), 768)
    assert isinstance(head, LaionAestheticHead)
    emb = np.random.default_rng(1).normal(size=768)
    with torch.no_grad():
        got = float(head(torch.from_numpy(emb / np.linalg.norm(emb)).float()[None])[0])
    assert got == pytest.approx(_by_hand(state, emb), abs=1e-4)


def test_laion_head_with_a_clip_backbone_scores_frames_by_hand(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16, projection_dim=768)
    backbone = CLIPVisionModelWithProjection(cfg).eval()
    backbone.save_pretrained(tmp_path / "clip")
    state = _laion_state(768, seed=3)
    torch.save({"state_dict": state}, tmp_path / "head.ckpt")  # a Lightning-style wrapper loads too
    scorer = AestheticScorer(str(tmp_path / "clip"), str(tmp_path / "head.ckpt"))
    frames = np.random.default_rng(2).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        embs = backbone(pixel_values=scorer.preprocess(frames)).image_embeds.double().numpy()
    assert scorer.preprocess(frames).shape == (2, 3, 32, 32)  # CLIP's centre crop, not a squash
    assert scorer(frames) == pytest.approx(np.mean([_by_hand(state, e) for e in embs]), abs=1e-4)


def test_a_head_of_the_wrong_width_or_layout_is_refused_with_the_fix(tmp_path):
    torch.save(_laion_state(512), tmp_path / "b32.pth")
    with pytest.raises(ValueError, match="ViT-L/14"):
        load_head(str(tmp_path / "b32.pth"), 768)
    torch.save({"fc.weight": torch.zeros(1, 768)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="neither the LAION"):
        load_head(str(tmp_path / "other.pth"), 768)


# -- NIQE (no-reference IQA) from its public model file -------------------------------------------


def test_niqe_distribution_fits_match_their_closed_forms():
    from models.niqe import aggd_fit, ggd_fit

    rng = np.random.default_rng(0)
    shape, var = ggd_fit(rng.normal(0, 1.5, 400_000))
    assert shape == pytest.approx(2.0, abs=0.03) and var == pytest.approx(2.25, rel=0.01)
    assert ggd_fit(rng.laplace(0, 1, 400_000))[0] == pytest.approx(1.0, abs=0.03)
    halves = np.abs(rng.normal(0, 1, 400_000))
    x = np.where(rng.random(400_000) < 1 / 3, -halves, 2 * halves)  # left sigma 1, right sigma 2, AGGD masses
    shape, mean, left, right = aggd_fit(x)
    assert shape == pytest.approx(2.0, abs=0.05) and left == pytest.approx(1.0, rel=0.02)
    assert right == pytest.approx(4.0, rel=0.02)
    assert mean == pytest.approx((2 - 1) * np.sqrt(2 / np.pi), rel=0.03)  # (r-l) G(2/a)/G(1/a) sqrt(G(1/a)/G(3/a))


def test_niqe_loads_the_public_mat_layout_and_scores_by_hand(tmp_path):
    from scipy.io import savemat

    from infra.config_filters import QualityConfig
    from models.niqe import NIQE, niqe_features
    from tasks.curate.filters.quality import QualityFilter, niqe_to_score

    grey = np.random.default_rng(3).integers(0, 256, (96, 96)).astype(np.uint8)  # one block per scale
    feats = niqe_features(grey)
    assert feats.shape == (1, 36)
    offset = np.zeros(36)
    offset[[0, 20]] = (3.0, 4.0)
    # One block: the image's covariance is zero, so the distance is |offset| under pinv(cov_p / 2) = I.
    savemat(tmp_path / "modelparameters.mat", {"mu_prisparam": (feats[0] + offset)[None], "cov_prisparam": 2 * np.eye(36)})
    assert NIQE(str(tmp_path / "modelparameters.mat"))([grey]) == pytest.approx(5.0, abs=1e-9)

    class Clip:  # the two fields QualityFilter reads
        grey_samples = grey[None]
        thumbs = np.zeros((3, 27, 48, 3), np.uint8)
        num_frames = 3

        def pick(self, count):
            return np.arange(1)

    row = QualityFilter(QualityConfig(niqe_model_path=str(tmp_path / "modelparameters.mat")))(Clip())
    assert row["score_iqa"] == pytest.approx(niqe_to_score(5.0)) == pytest.approx(1 / (1 + np.exp(-1.0)))
    savemat(tmp_path / "other.mat", {"mu": np.zeros((1, 36))})
    with pytest.raises(ValueError, match="not a NIQE model"):
        NIQE(str(tmp_path / "other.mat"))
