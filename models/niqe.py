"""NIQE, the no-reference Natural Image Quality Evaluator (Mittal, Soundararajan & Bovik, IEEE SPL 2013),
from its public model file: ``modelparameters.mat`` (as shipped with the authors' MATLAB code and reused
by common IQA toolboxes) holding ``mu_prisparam`` (1x36) and ``cov_prisparam`` (36x36), the multivariate
Gaussian of 36 natural-scene statistics over pristine images.

Per the paper: the grey image (0-255) is cut to whole 96x96 blocks; at two scales (the second a
bicubic half-size), MSCN coefficients (local mean and deviation under a 7x7 Gaussian, sigma 7/6) give,
per block, a generalised Gaussian fit (shape, variance) and, for each of four neighbour products
(horizontal, vertical, both diagonals), an asymmetric generalised Gaussian fit (shape, mean, left and
right variance): 18 numbers per scale. The quality is the distance between the pristine Gaussian and
the Gaussian of the image's blocks: ``sqrt((mu_p - mu_d)^T pinv((S_p + S_d) / 2) (mu_p - mu_d))``;
lower is better. No I/O besides loading the model file.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

BLOCK = 96
SHAPES = np.arange(0.2, 10.0005, 0.001)  # the shape grid the moment-matching fits search (MATLAB's 0.2:0.001:10)
_G = {k: np.array([math.gamma(k / s) for s in SHAPES]) for k in (1, 2, 3)}
GGD_RATIO = _G[1] * _G[3] / _G[2] ** 2
AGGD_RATIO = _G[2] ** 2 / (_G[1] * _G[3])
SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # neighbour products: horizontal, vertical, two diagonals


def load_niqe_model(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu [36], cov [36, 36]) from a NIQE ``.mat`` model file; a clear error for anything else."""
    from scipy.io import loadmat

    data = loadmat(path)
    if "mu_prisparam" not in data or "cov_prisparam" not in data:
        raise ValueError(f"{path}: not a NIQE model (needs mu_prisparam and cov_prisparam, has "
                         f"{sorted(k for k in data if not k.startswith('__'))})")
    mu, cov = np.asarray(data["mu_prisparam"], np.float64).ravel(), np.asarray(data["cov_prisparam"], np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ValueError(f"{path}: NIQE model has mu {mu.shape} and cov {cov.shape}; expected (36,) and (36, 36)")
    return mu, cov


def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """Generalised Gaussian shape (moment matching over ``SHAPES``) and variance."""
    var = float(np.mean(x * x))
    rho = var / max(float(np.mean(np.abs(x))) ** 2, 1e-12)
    return float(SHAPES[np.argmin(np.abs(rho - GGD_RATIO))]), var


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian: shape, mean, left variance, right variance."""
    left, right = x[x < 0], x[x > 0]
    lstd = math.sqrt(float(np.mean(left * left))) if left.size else 0.0
    rstd = math.sqrt(float(np.mean(right * right))) if right.size else 0.0
    g = lstd / max(rstd, 1e-12)
    rhat = float(np.mean(np.abs(x))) ** 2 / max(float(np.mean(x * x)), 1e-12)
    rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    shape = float(SHAPES[np.argmin((AGGD_RATIO - rnorm) ** 2)])
    mean = (rstd - lstd) * math.gamma(2 / shape) / math.gamma(1 / shape) * math.sqrt(math.gamma(1 / shape) / math.gamma(3 / shape))
    return shape, mean, lstd * lstd, rstd * rstd


def mscn(grey: np.ndarray) -> np.ndarray:
    """Mean-subtracted, contrast-normalised coefficients (replicated borders, as MATLAB's imfilter)."""
    mu = cv2.GaussianBlur(grey, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
    sigma = np.sqrt(np.abs(cv2.GaussianBlur(grey * grey, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE) - mu * mu))
    return (grey - mu) / (sigma + 1)


def block_features(block: np.ndarray) -> list[float]:
    """The 18 statistics of one block of MSCN coefficients."""
    shape, var = ggd_fit(block.ravel())
    feats = [shape, var]
    for dy, dx in SHIFTS:
        feats += aggd_fit((block * np.roll(block, (dy, dx), axis=(0, 1))).ravel())
    return feats


def niqe_features(grey: np.ndarray) -> np.ndarray:
    """[blocks, 36] statistics of a grey image (0-255), two scales side by side."""
    h, w = (grey.shape[0] // BLOCK) * BLOCK, (grey.shape[1] // BLOCK) * BLOCK
    if h == 0 or w == 0:
        raise ValueError(f"NIQE needs at least a {BLOCK}x{BLOCK} image, got {grey.shape[1]}x{grey.shape[0]}")
    image = grey[:h, :w].astype(np.float64)
    scales = []
    for scale in (1, 2):
        coeffs, size = mscn(image), BLOCK // scale
        scales.append([block_features(coeffs[y : y + size, x : x + size])
                       for y in range(0, coeffs.shape[0] - size + 1, size) for x in range(0, coeffs.shape[1] - size + 1, size)])
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_CUBIC)
    return np.hstack([np.asarray(s) for s in scales])


def niqe_distance(features: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> float:
    """Distance between the pristine Gaussian (mu, cov) and the blocks' Gaussian."""
    mu_d = np.nanmean(features, axis=0)
    cov_d = np.cov(features, rowvar=False) if len(features) > 1 else np.zeros_like(cov)
    diff = mu - mu_d
    return float(math.sqrt(max(diff @ np.linalg.pinv((cov + cov_d) / 2) @ diff, 0.0)))


class NIQE:
    """Loads a model file once; ``__call__(grey uint8 frames) -> mean NIQE`` (lower is better)."""

    def __init__(self, path: str):
        self.mu, self.cov = load_niqe_model(path)

    def __call__(self, greys: list[np.ndarray] | np.ndarray) -> float:
        return float(np.mean([niqe_distance(niqe_features(g), self.mu, self.cov) for g in greys]))
