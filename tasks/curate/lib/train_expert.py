"""Train a captioning sub-expert (``reelflow train-expert``): today the shot expert (report section
3.2, Shot Captioner: type, angle, position heads over a CLIP embedding, ``models.shot_heads``).

Labelled data: a JSONL file of ``{"clip_uri": ..., "shot_type": ..., "shot_angle": ...,
"shot_position": ...}`` rows (any subset of the three labels; the middle frame is used), or, in
the tiny profile, synthetic frames whose label is known by construction (:func:`synthetic_shot`):
a corpus sprite drawn at the scale of each shot type, keystoned and with the horizon placed as
seen from each angle, squeezed as seen from each position. The corpus truth carries no shot
labels, hence the synthetic set. Writes an expert folder (``backbone/`` + ``heads.pt``, the
held-out accuracies inside) that ``CaptionConfig.shot.expert_path`` points at.
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import torch

from infra import storage
from infra.video import iter_frames, probe_video
from models.shot_heads import TASKS, evaluate_shot_heads, save_expert, tiny_backbone, train_shot_heads
from tasks.corpus.lib.scene import make_canvas
from tasks.corpus.lib.sprites import NAMES, draw_subject

# Subject height / frame height per shot type (a human figure; its head is the top ~1/5).
SCALE = {"long": (0.15, 0.3), "full": (0.7, 0.92), "medium": (1.7, 2.1), "close-up": (3.4, 4.2),
         "extreme close-up": (7.0, 9.0)}
# Where the head top sits (share of frame height) once the figure is larger than the frame.
HEAD_TOP = {"medium": (0.04, 0.14), "close-up": (0.02, 0.1), "extreme close-up": (-0.55, -0.4)}
# Angle: keystone (top width / bottom width of the figure) and horizon height (share of frame).
ANGLE = {"eye level": (1.0, (0.45, 0.55)), "high": (1.45, (0.05, 0.2)), "low": (0.7, (0.8, 0.95))}
# Position: horizontal squeeze of a figure drawn facing the camera. Back and overhead views need
# drawings the corpus does not have: those classes exist in the heads but not in this set.
SQUEEZE = {"front": 1.0, "three-quarter": 0.7, "side": 0.42}


def synthetic_shot(rng: np.random.Generator, size: tuple[int, int] = (160, 96)) -> tuple[np.ndarray, dict[str, str]]:
    """One RGB frame (``size`` = width, height) and its shot labels."""
    w, h = size
    labels = {"shot_type": str(rng.choice(list(SCALE))), "shot_angle": str(rng.choice(list(ANGLE))),
              "shot_position": str(rng.choice(list(SQUEEZE)))}
    keystone, horizon = ANGLE[labels["shot_angle"]]
    frame = make_canvas(rng, (w, h), float(rng.uniform(0, 360))).astype(np.float32)
    frame[round(rng.uniform(*horizon) * h):] *= 0.55  # the ground below the horizon
    height = rng.uniform(*SCALE[labels["shot_type"]]) * h
    sprite = draw_subject(rng, "human", str(rng.choice(NAMES["human"])), round(height))
    sh, sw = sprite.alpha.shape
    top = rng.uniform(*HEAD_TOP[labels["shot_type"]]) * h if labels["shot_type"] in HEAD_TOP \
        else rng.uniform(0.55, 0.95) * h - sh
    cx, half = rng.uniform(0.35, 0.65) * w, sw * SQUEEZE[labels["shot_position"]] / 2
    k = np.sqrt(keystone)
    dst = np.float32([[cx - half * k, top], [cx + half * k, top], [cx + half / k, top + sh], [cx - half / k, top + sh]])
    warp = cv2.getPerspectiveTransform(np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]]), dst)
    color = cv2.warpPerspective(sprite.bgr, warp, (w, h), flags=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.warpPerspective(sprite.alpha, warp, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    frame = frame * (1 - alpha) + color * alpha
    return cv2.cvtColor(np.clip(frame + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB), labels


def synthetic_shot_set(count: int, seed: int, size: tuple[int, int] = (160, 96)) -> list[tuple[np.ndarray, dict]]:
    rng = np.random.default_rng(seed)
    return [synthetic_shot(rng, size) for _ in range(count)]


def load_labelled_clips(jsonl_uri: str) -> list[tuple[np.ndarray, dict[str, str]]]:
    """``(middle frame, labels)`` for each row of a labelled-clips JSONL file."""
    out = []
    for line in storage.read_text(jsonl_uri).splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        labels = {t: row[t] for t in TASKS if row.get(t) is not None}
        for task, label in labels.items():
            if label not in TASKS[task]:
                raise ValueError(f"{jsonl_uri}: {task}={label!r} is not one of {TASKS[task]}")
        with storage.local_copy(row["clip_uri"]) as path:
            mid = probe_video(path).num_frames // 2
            frame = next(f for _, f in iter_frames(path, mid, mid + 1))
        out.append((frame, labels))
    return out


def train_expert(
    expert: str = "shot",
    out_dir: str = "experts/shot",
    labelled: str | None = None,
    *,
    backbone_path: str | None = None,
    synthetic_clips: int = 2000,
    holdout: float = 0.25,
    epochs: int = 30,
    seed: int = 0,
) -> dict:
    """Train the ``expert`` on ``labelled`` (a JSONL URI) or the synthetic set; hold out a share
    for the reported accuracies; write ``out_dir``. Returns the metrics (also saved with the heads)."""
    if expert != "shot":
        raise ValueError(f"expert {expert!r} is unknown; allowed: shot (camera motion is geometric, "
                         "expression uses the fer model)")
    data = load_labelled_clips(labelled) if labelled else synthetic_shot_set(synthetic_clips, seed)
    if len(data) < 4:
        raise ValueError(f"need at least 4 labelled clips, got {len(data)}")
    order = np.random.default_rng(seed).permutation(len(data))
    cut = max(1, round(len(data) * holdout))
    test, train = [data[i] for i in order[:cut]], [data[i] for i in order[cut:]]
    if backbone_path:
        from transformers import CLIPVisionModelWithProjection

        backbone = CLIPVisionModelWithProjection.from_pretrained(backbone_path)
    else:
        backbone = tiny_backbone(seed)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    backbone, heads, losses = train_shot_heads(train, backbone, epochs=epochs, seed=seed)
    metrics = {"heldout": evaluate_shot_heads(backbone, heads, test), "train_clips": len(train),
               "test_clips": len(test), "final_loss": round(losses[-1], 4),
               "data": labelled or f"synthetic({synthetic_clips}, seed={seed})"}
    save_expert(out_dir, backbone, heads, metrics)
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=1)
    return metrics
