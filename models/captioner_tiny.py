"""The tiny random SkyCaptioner of the tiny profile (``models.captioner``): a randomly initialised tiny
Qwen2.5-VL and a byte-level BPE tokenizer trained offline on caption-like text, saved once into a folder so
the production ``from_pretrained`` path runs unchanged."""

from __future__ import annotations

import json
import os
from typing import get_args

import numpy as np
import torch

from models.caption_schema import Category, Emotion, Intensity, ShotAngle, ShotPosition, ShotType
from models.captioner_chat import MARKER, SPECIAL_TOKENS, SYSTEM_PROMPT, USER_PROMPT

# --- the tiny model's text ---------------------------------------------------------------------------
WORDS = ("red", "blue", "dark", "bright", "young", "old", "tall", "small", "wooden", "stone", "green", "coat",
         "dress", "hair", "walks", "runs", "stands", "sits", "turns", "looks", "smiles", "left", "right", "centre",
         "foreground", "background", "street", "room", "forest", "city", "sky", "night", "day", "soft", "warm",
         "cold", "natural", "light", "the", "a", "in", "of", "and", "with", "to", "at", "slowly", "toward", "camera")


def _caption_like_texts(count: int, seed: int) -> list[str]:
    """Random JSON captions over the schema's vocabulary: what the tiny tokenizer learns to merge."""
    rng = np.random.default_rng(seed)

    def words(n: int) -> str:
        return " ".join(rng.choice(WORDS, int(rng.integers(1, n))))

    def pick(literal) -> str:
        return str(rng.choice(get_args(literal)))

    texts = [SYSTEM_PROMPT, USER_PROMPT]
    for _ in range(count):
        subjects = [{"TYPES": {"type": pick(Category), "sub_type": words(2)}, "appearance": words(8),
                     "action": words(6), "expression": None if rng.random() < 0.5 else {
                         "emotion": pick(Emotion), "intensity": pick(Intensity), "change": words(3)},
                     "position": words(3), "is_main_subject": bool(rng.random() < 0.5)}
                    for _ in range(int(rng.integers(1, 4)))]
        caption = {"subjects": subjects, "shot_type": pick(ShotType), "shot_angle": pick(ShotAngle),
                   "shot_position": pick(ShotPosition),
                   "camera_motion": {a: str(rng.choice(["+", "-", "0"])) for a in ("tx", "ty", "tz", "roll", "pitch", "yaw")}
                   | {"speed": "slow", "handheld": False, "abrupt_change": False},
                   "environment": words(8), "lighting": words(3)}
        texts.append(json.dumps(caption, separators=(",", ":")))
    return texts


def build_tiny_tokenizer(vocab_size: int = 1024, seed: int = 0):
    """A byte-level BPE trained offline on caption-like text, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_caption_like_texts(2000, seed), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=list(SPECIAL_TOKENS[1:]))


def build_tiny_captioner(folder: str, seed: int = 0) -> str:
    """A randomly initialised tiny Qwen2.5-VL + tokenizer saved in ``folder`` (once)."""
    if os.path.exists(os.path.join(folder, MARKER)):
        return folder
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tiny_tokenizer(seed=seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    cfg = Qwen2_5_VLConfig(
        text_config={"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 8192,
                     # mrope_section splits head_dim/2 = 16 rotary pairs over (time, height, width)
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "fullatt_block_indexes": [1], "window_size": 56, "tokens_per_second": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as fh:
        json.dump({"tiny": True, "seed": seed, "vocab_size": vocab}, fh)
    return folder
