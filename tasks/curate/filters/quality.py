"""Quality filters (report section 3.1): IQA, VQA and VTSS.

IQA (no-reference, classic measures, averaged over ``frames`` samples):
- sharpness: variance of the Laplacian (Pech-Pacheco et al. 2000), as log10;
- noise: Immerkaer's fast noise sigma estimate (1996), from the Laplacian-difference kernel;
- blockiness: mean |horizontal + vertical difference| on the 8-pixel codec grid over the mean off it
  (Wang, Sheikh & Bovik 2002's idea), minus 1.
``score_iqa`` in (0, 1): a logistic of those three with fixed, documented weights (IQA_WEIGHTS): the
CPU default, hand-weighted, no learnt model. With ``niqe_model_path`` (the GPU profiles) ``score_iqa``
comes from NIQE (:mod:`models.niqe`, the public ``modelparameters.mat``) instead, mapped to (0, 1) by
``niqe_to_score`` (NIQE ~3 on pristine photographs, 8+ on badly degraded ones).
VQA: ``score_vqa`` = IQA x temporal consistency, where flicker is the std of frame-to-frame mean luma
changes (thumbnails, every frame): the CPU default, a hand formula. With ``vqa_checkpoint_path`` (the
GPU profiles) ``score_vqa`` comes from FAST-VQA's public checkpoint format (:mod:`models.vqa_fast`).
VTSS: :mod:`models.vtss` over the row's scores (filled in last by the stage worker, once every other
filter has run): the CPU default, hand-set prior weights. With ``vtss_checkpoint_path`` (the GPU
profiles) ``score_vtss`` comes from Koala-36M's public checkpoint format (:mod:`models.vtss_koala`),
computed here from the frames; the row filter keeps it. Both checkpoint models read the shared decode's
RGB samples (``decode.sample_fps`` / ``analysis_width``), not every native frame as the releases do.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow as pa

from infra.config_filters import QualityConfig
from models.vtss import VTSSWeights, prior_weights, vtss
from tasks.curate.filters.frames import ClipFrames

IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
BLOCK = 8
# logit = a*log10(sharpness) - b*noise_sigma - c*blockiness + d: sharp ~ +, grain and blocks ~ -
IQA_WEIGHTS = {"sharpness": 2.0, "noise": 0.6, "blockiness": 4.0, "bias": -3.0}
FLICKER_SCALE = 4.0  # luma levels: a flicker std of this much scales the VQA by 1/e


def sharpness(grey: np.ndarray) -> float:
    return float(np.log10(cv2.Laplacian(grey, cv2.CV_32F).var() + 1.0))


def noise_sigma(grey: np.ndarray) -> float:
    h, w = grey.shape
    response = np.abs(cv2.filter2D(grey.astype(np.float32), -1, IMMERKAER))[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * response.sum() / (6 * (w - 2) * (h - 2)))


def blockiness(grey: np.ndarray) -> float:
    g = grey.astype(np.float32)
    dx = np.abs(np.diff(g, axis=1)).mean(axis=0)  # per column boundary
    on = dx[BLOCK - 1::BLOCK].mean() if len(dx) >= BLOCK else 0.0
    off = np.delete(dx, np.s_[BLOCK - 1::BLOCK]).mean() + 1e-6
    dy = np.abs(np.diff(g, axis=0)).mean(axis=1)
    on_y = dy[BLOCK - 1::BLOCK].mean() if len(dy) >= BLOCK else 0.0
    off_y = np.delete(dy, np.s_[BLOCK - 1::BLOCK]).mean() + 1e-6
    return float(max((on / off + on_y / off_y) / 2 - 1.0, 0.0))


NIQE_MID, NIQE_SPREAD = 6.0, 1.0  # NIQE at which score_iqa is 0.5, and per unit of NIQE the logit falls by 1


def niqe_to_score(value: float) -> float:
    """Lower NIQE is better: a logistic into (0, 1), higher better, like the CPU formula."""
    return float(1.0 / (1.0 + np.exp((value - NIQE_MID) / NIQE_SPREAD)))


def iqa(s: float, n: float, b: float) -> float:
    w = IQA_WEIGHTS
    z = w["sharpness"] * s - w["noise"] * n - w["blockiness"] * b + w["bias"]
    return float(1.0 / (1.0 + np.exp(-z)))


class QualityFilter:
    name = "quality"
    columns = {"score_sharpness": pa.float64(), "score_noise": pa.float64(), "score_blockiness": pa.float64(),
               "score_iqa": pa.float64(), "score_flicker": pa.float64(), "score_vqa": pa.float64()}

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg
        self.niqe = None
        if cfg.niqe_model_path:
            from models.niqe import NIQE

            self.niqe = NIQE(cfg.niqe_model_path)
        self.vqa = self.koala = None
        sampling = {"clip_len": cfg.checkpoint_clip_len, "num_clips": cfg.checkpoint_clips}
        if cfg.vqa_checkpoint_path:
            from models.vqa_fast import FastVQA

            self.vqa = FastVQA(cfg.vqa_checkpoint_path, **sampling)
        if cfg.vtss_checkpoint_path:
            from models.vtss_koala import KoalaVTSS

            self.koala = KoalaVTSS(cfg.vtss_checkpoint_path, cfg.vtss_raw_mean, cfg.vtss_raw_std, **sampling)

    def __call__(self, clip: ClipFrames) -> dict:
        grey = clip.grey_samples[clip.pick(self.cfg.frames)]
        s = float(np.mean([sharpness(g) for g in grey]))
        n = float(np.mean([noise_sigma(g) for g in grey]))
        b = float(np.mean([blockiness(g) for g in grey]))
        means = clip.thumbs.reshape(clip.num_frames, -1).mean(axis=1)
        flicker = float(np.diff(means).std()) if clip.num_frames > 2 else 0.0
        q = niqe_to_score(self.niqe(grey)) if self.niqe is not None else iqa(s, n, b)
        vqa = q * float(np.exp(-flicker / FLICKER_SCALE)) if self.vqa is None else self.vqa.score(clip.samples)[1]
        out = {"score_sharpness": s, "score_noise": n, "score_blockiness": b, "score_iqa": q,
               "score_flicker": flicker, "score_vqa": vqa}
        if self.koala is not None:  # VTSSFilter keeps it (it sees the row, not the frames)
            out["score_vtss"] = self.koala.score(clip.samples)[1]
        return out


class VTSSFilter:
    """Runs on the row's scores, after the others (no frames)."""

    name = "vtss"
    columns = {"score_vtss": pa.float64()}

    def __init__(self, cfg: QualityConfig):
        self.from_checkpoint = bool(cfg.vtss_checkpoint_path)
        self.weights = prior_weights()
        if cfg.vtss_weights_path:
            with open(cfg.vtss_weights_path, encoding="utf-8") as fh:
                self.weights = VTSSWeights.model_validate(json.load(fh))

    def __call__(self, row: dict) -> dict:
        if self.from_checkpoint:
            return {"score_vtss": row.get("score_vtss")}
        return {"score_vtss": float(vtss(row, self.weights)[0])}
