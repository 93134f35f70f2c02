"""Zero-shot subject classifier over clip frames: a CLIP image tower against prompt embeddings.

Used by concept balancing (report section 3.1) for clips whose caption has no ``category``. The
real model is any transformers ``CLIPModel`` folder (e.g. a local copy of
openai/clip-vit-base-patch32); the tiny profile builds a random CLIP with a character-level
tokenizer once into a folder, so both load through the same ``from_pretrained`` path. A random
tower's labels are meaningless: the tiny path exercises the interface, not the accuracy.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Sequence

import numpy as np
import torch

TINY_SIZE = 32


def build_tiny_clip(folder: str, seed: int = 0) -> str:
    """Write a random tiny CLIPModel + tokenizer + image processor into ``folder`` (once)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    os.makedirs(folder, exist_ok=True)
    # Character-level BPE vocabulary (no merges): enough for prompts, nothing to download.
    chars = string.ascii_lowercase + string.digits + " -'/.,"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "<|unk|>": 2}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    with open(os.path.join(folder, "vocab.json"), "w") as fh:
        json.dump(vocab, fh)
    with open(os.path.join(folder, "merges.txt"), "w") as fh:
        fh.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                              unk_token="<|unk|>")
    common = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**common, "vocab_size": len(vocab), "max_position_embeddings": 77,
                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**common, "image_size": TINY_SIZE, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": TINY_SIZE}, crop_size={"height": TINY_SIZE, "width": TINY_SIZE}
                       ).save_pretrained(folder)
    return folder


class ZeroShotClassifier:
    """``classify(clips, labels)``: one label per clip, from the mean of its frame embeddings."""

    def __init__(self, model_path: str, prompt: str = "a film still of a {}", device: str = "cpu"):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        self.model = CLIPModel.from_pretrained(model_path).to(device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(model_path)
        self.processor = CLIPImageProcessor.from_pretrained(model_path)
        self.prompt, self.device = prompt, device
        self._text: dict[tuple[str, ...], torch.Tensor] = {}

    def _text_embeddings(self, labels: tuple[str, ...]) -> torch.Tensor:
        if labels not in self._text:
            tokens = self.tokenizer([self.prompt.format(x) for x in labels], padding=True, return_tensors="pt")
            with torch.no_grad():
                emb = self.model.get_text_features(**tokens.to(self.device))
            self._text[labels] = torch.nn.functional.normalize(_tensor(emb), dim=-1)
        return self._text[labels]

    def similarity(self, frames: Sequence[np.ndarray], text: str) -> float:
        """Cosine similarity of a clip (mean of its frame embeddings) and a free text (e.g. its caption)."""
        limit = self.model.config.text_config.max_position_embeddings  # long captions keep their head
        tokens = self.tokenizer([text], truncation=True, max_length=limit, return_tensors="pt").to(self.device)
        pixels = self.processor(images=list(frames), return_tensors="pt")["pixel_values"].to(self.device)
        with torch.no_grad():
            text_emb = torch.nn.functional.normalize(_tensor(self.model.get_text_features(**tokens)), dim=-1)[0]
            image = torch.nn.functional.normalize(_tensor(self.model.get_image_features(pixel_values=pixels)), dim=-1)
        return float(torch.nn.functional.normalize(image.mean(0), dim=-1) @ text_emb)

    def classify(self, clips: Sequence[Sequence[np.ndarray]], labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """``clips``: per clip a list of HxWx3 uint8 RGB frames. Returns (labels, probabilities)."""
        text = self._text_embeddings(tuple(labels))
        pooled = []
        for frames in clips:
            pixels = self.processor(images=list(frames), return_tensors="pt")["pixel_values"].to(self.device)
            with torch.no_grad():
                emb = torch.nn.functional.normalize(_tensor(self.model.get_image_features(pixel_values=pixels)), dim=-1)
            pooled.append(torch.nn.functional.normalize(emb.mean(0), dim=-1))
        logits = self.model.logit_scale.exp() * torch.stack(pooled) @ text.T
        probs = logits.softmax(-1).detach().cpu().numpy()
        return [labels[i] for i in probs.argmax(-1)], probs


def _tensor(output) -> torch.Tensor:
    """transformers >= 5 may return a model output instead of a tensor from get_*_features."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
