"""Diffusers-format SkyReels-V2 checkpoint folders with random weights, built offline.

`init_checkpoint` writes the same layout as the published `Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers`
(model_index.json + transformer/ vae/ text_encoder/ tokenizer/ scheduler/), using the very classes the
reference pipeline loads, so `SkyReelsV2DiffusionForcingPipeline.from_pretrained(folder)` works unchanged.
Profiles (docs/architecture.md): `tiny` runs a long diffusion-forcing generation in seconds on CPU;
`wan-1.3b` is the real SkyReels-V2-DF-1.3B DiT and Wan2.1 VAE architecture (random init, GPU only).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# The tokenizer's pieces: a umT5-style Unigram vocabulary cut down to characters and a few film words,
# so any ASCII prompt tokenizes (character fallback) without a sentencepiece file from the hub.
_SPECIAL = ["<pad>", "</s>", "<unk>"]
_CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-_/&%+*=#@")
_WORDS = (
    "a an the and of in on at to with from by for is are was his her their it this that camera shot close up "
    "wide medium long slow fast pan tilt zoom dolly tracking static scene film video light dark night day "
    "city street forest sea sky sun rain snow car man woman child cat dog bird walks runs looks smiles "
    "talks dances flies drives red blue green white black golden soft warm cold cinematic realistic"
).split()


@dataclass(frozen=True)
class Profile:
    """Component configs of one checkpoint size; keyword arguments of the diffusers/transformers classes."""

    transformer: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any] = field(
        # The published DF checkpoints ship UniPC in flow-matching mode; shift 8 is the T2V default
        # (upstream README: --flow_shift 8.0 for T2V, 5.0 for I2V).
        default_factory=lambda: {
            "prediction_type": "flow_prediction",
            "use_flow_sigmas": True,
            "flow_shift": 8.0,
            "num_train_timesteps": 1000,
        }
    )


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        transformer=dict(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
            out_channels=16, text_dim=32, freq_dim=32, ffn_dim=48, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, inject_sample_info=True, rope_max_seq_len=1024,
        ),
        vae=dict(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                 temperal_downsample=[False, True, True]),
        text_encoder=dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          relative_attention_num_buckets=8, relative_attention_max_distance=32),
    ),
    # SkyReels-V2-DF-1.3B-540P: 30 layers, 12 heads x 128, FFN 8960, fps conditioning (inject_sample_info).
    "wan-1.3b": Profile(
        transformer=dict(
            patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
            out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, inject_sample_info=True,
        ),
        vae={},  # AutoencoderKLWan defaults are the Wan2.1 VAE
        # umT5-XXL width (4096, what the DiT consumes) but 2 layers and a small vocabulary: the text encoder
        # runs once per prompt, and a random 5.7B encoder would only cost disk and load time.
        text_encoder=dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=2, num_heads=64),
    ),
}


def build_tokenizer():
    """A umT5-compatible fast tokenizer (pad=0, eos=1, unk=2, appends </s>) from the built-in vocabulary."""
    from transformers import T5Tokenizer

    pieces = [(tok, 0.0) for tok in _SPECIAL] + [("\u2581", -2.0)]
    pieces += [("\u2581" + w, -3.0) for w in _WORDS]
    pieces += [(c, -5.0) for c in _CHARS] + [("\u2581" + c, -6.0) for c in _CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build_components(profile: str, seed: int = 0, diffusion_forcing: bool = True) -> dict[str, Any]:
    """Random-init pipeline components of `profile`, deterministic in `seed`.

    A full-sequence (non-DF) DiT has no frame-rate conditioning: the report drops the fps embedding in the
    540p SFT (section 3.4.3), and diffusers' full-sequence `SkyReelsV2Pipeline` passes no fps."""
    from diffusers import AutoencoderKLWan, SkyReelsV2Transformer3DModel, UniPCMultistepScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    spec = PROFILES[profile]
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **spec.text_encoder)).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(**spec.vae).eval()
    torch.manual_seed(seed + 2)
    transformer = SkyReelsV2Transformer3DModel(**{**spec.transformer, "inject_sample_info": diffusion_forcing}).eval()
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "transformer": transformer,
        "scheduler": UniPCMultistepScheduler(**spec.scheduler),
    }


def init_checkpoint(profile: str, out_dir: str, seed: int = 0, diffusion_forcing: bool = True) -> str:
    """Write a complete diffusers checkpoint folder for `profile` at `out_dir`; returns its path.

    `diffusion_forcing` picks the pipeline recorded in model_index.json (the DF one, or the full-sequence
    `SkyReelsV2Pipeline`); the weights' layout is the same. The folder is built in a temporary sibling and
    published with one rename, so a crash never leaves a half-written checkpoint under the real name.
    """
    from diffusers import SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Pipeline

    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} already exists; pick a new folder or delete it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    pipeline_cls = SkyReelsV2DiffusionForcingPipeline if diffusion_forcing else SkyReelsV2Pipeline
    pipe = pipeline_cls(**build_components(profile, seed, diffusion_forcing))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out)


def load_pipeline_components(path: str, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Load the five components of a diffusers SkyReels-V2 folder (local path) by their own classes."""
    from diffusers import AutoencoderKLWan, SkyReelsV2Transformer3DModel, UniPCMultistepScheduler
    from transformers import AutoTokenizer, UMT5EncoderModel

    root = Path(path)
    if not (root / "model_index.json").is_file():
        raise FileNotFoundError(f"{root} is not a diffusers checkpoint folder (no model_index.json)")
    return {
        "tokenizer": AutoTokenizer.from_pretrained(root / "tokenizer"),
        "text_encoder": UMT5EncoderModel.from_pretrained(root / "text_encoder", torch_dtype=dtype).eval(),
        "vae": AutoencoderKLWan.from_pretrained(root / "vae", torch_dtype=torch.float32).eval(),
        "transformer": SkyReelsV2Transformer3DModel.from_pretrained(root / "transformer", torch_dtype=dtype).eval(),
        "scheduler": UniPCMultistepScheduler.from_pretrained(root / "scheduler"),
    }


DF_PIPELINES = ("SkyReelsV2DiffusionForcingPipeline", "SkyReelsV2DiffusionForcingImageToVideoPipeline",
                "SkyReelsV2DiffusionForcingVideoToVideoPipeline")


def pipeline_class_name(path: str) -> str:
    """The pipeline a diffusers checkpoint folder was saved from (model_index.json `_class_name`)."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{path} is not a diffusers checkpoint folder (no model_index.json); build one "
                                "with `reelflow init-checkpoint --profile tiny --out DIR`")
    return json.loads(index.read_text())["_class_name"]


def is_diffusion_forcing(path: str) -> bool:
    """Whether the folder holds a diffusion-forcing DiT (the SkyReels-V2-DF-* checkpoints)."""
    return pipeline_class_name(path) in DF_PIPELINES
