"""umT5 text conditioning of the SkyReels-V2 DiT, prepared as Wan2.1 prepares its prompts."""

from __future__ import annotations

import html
import re

import torch


def clean_prompt(text: str) -> str:
    """Repair mojibake and HTML entities and collapse whitespace, as Wan2.1's prompt preprocessing does."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], max_length: int) -> torch.Tensor:
    """umT5 hidden states padded to `max_length`, zero past each prompt's end (Wan2.1 text conditioning)."""
    tokens = tokenizer([clean_prompt(p) for p in prompts], padding="max_length", max_length=max_length,
                       truncation=True, add_special_tokens=True, return_attention_mask=True,
                       return_tensors="pt")
    device = text_encoder.device
    hidden = text_encoder(tokens.input_ids.to(device), tokens.attention_mask.to(device)).last_hidden_state
    return hidden.masked_fill(~tokens.attention_mask.to(device).bool()[..., None], 0.0)
