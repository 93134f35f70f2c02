"""VTSS, a video training-suitability score (report section 3.1, "quality filters").

A logistic model over standardised filter scores: P(good) = sigmoid(b + sum_k w_k (x_k - mu_k) / s_k).
The prior weights encode the report's intent (sharp, clean, moderate motion, aesthetic is good;
noise, blocking, text, overlays are bad); :func:`fit_vtss` learns them from audit verdicts
(L2-regularised logistic regression by Newton's method, numpy only). No I/O.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

# feature column -> prior weight (sign = direction), on standardised values
PRIOR = {
    "score_iqa": 1.5, "score_vqa": 1.0, "score_aesthetic": 0.5, "score_motion": 0.3,
    "score_text": -1.0, "score_logo": -0.5, "score_mosaic": -1.0, "score_sticker": -0.5,
    "score_black_s": -1.0, "score_static_s": -1.0, "score_border": -0.5,
}
PRIOR_MEAN = {"score_iqa": 0.5, "score_vqa": 0.5, "score_motion": 0.05}
PRIOR_SCALE = {"score_iqa": 0.2, "score_vqa": 0.2, "score_motion": 0.05, "score_black_s": 0.1,
               "score_static_s": 0.2, "score_border": 0.1, "score_mosaic": 0.01, "score_sticker": 0.02}


class VTSSWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float


def prior_weights() -> VTSSWeights:
    names = list(PRIOR)
    return VTSSWeights(features=names, mean=[PRIOR_MEAN.get(n, 0.0) for n in names],
                       scale=[PRIOR_SCALE.get(n, 1.0) for n in names], coef=[PRIOR[n] for n in names], intercept=1.0)


def _matrix(scores: pd.DataFrame | dict, w: VTSSWeights) -> np.ndarray:
    frame = pd.DataFrame([scores]) if isinstance(scores, dict) else scores
    x = np.column_stack([pd.to_numeric(frame.get(f, pd.Series(np.nan, index=frame.index)), errors="coerce")
                         .to_numpy(float) for f in w.features])
    x = (x - np.asarray(w.mean)) / np.asarray(w.scale)
    return np.nan_to_num(x, nan=0.0)  # a missing score (filter off) counts as average


def vtss(scores: pd.DataFrame | dict, w: VTSSWeights) -> np.ndarray:
    """P(good) per row of ``scores`` (a DataFrame of score columns, or one row as a dict)."""
    z = _matrix(scores, w) @ np.asarray(w.coef) + w.intercept
    return 1.0 / (1.0 + np.exp(-z))


def fit_vtss(scores_df: pd.DataFrame, verdicts, l2: float = 1.0, features: list[str] | None = None) -> VTSSWeights:
    """Learn VTSS weights from audit verdicts: ``verdicts`` maps clip_id -> good (bool, or
    "good"/"bad"), a dict or a Series; rows of ``scores_df`` (with ``clip_id``) without one are unused."""
    verdicts = pd.Series(verdicts)
    label = verdicts.map(lambda v: v if isinstance(v, bool | np.bool_) else str(v).lower() == "good").astype(float)
    rows = scores_df[scores_df["clip_id"].isin(label.index)]
    if rows.empty or label.loc[rows["clip_id"]].nunique() < 2:
        raise ValueError("fit_vtss needs verdicts of both kinds (good and bad) for scored clips")
    names = [f for f in (features or list(PRIOR)) if f in rows]
    raw = rows[names].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    mean, scale = np.nanmean(raw, axis=0), np.nanstd(raw, axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    x = np.nan_to_num((raw - mean) / scale)
    x = np.column_stack([x, np.ones(len(x))])
    y = label.loc[rows["clip_id"]].to_numpy()
    beta = np.zeros(x.shape[1])
    penalty = np.diag([l2] * (x.shape[1] - 1) + [0.0])  # the intercept is not shrunk
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-x @ beta))
        grad = x.T @ (p - y) + penalty @ beta
        hess = x.T @ (x * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return VTSSWeights(features=names, mean=mean.tolist(), scale=scale.tolist(), coef=beta[:-1].tolist(),
                       intercept=float(beta[-1]))
