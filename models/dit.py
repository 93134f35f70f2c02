"""The DiT the trainer optimises: loaded from, checked against and saved into diffusers folders.

Only the transformer is trained (report section 3.3: the Wan2.1 VAE and umT5 encoder are kept), so a
training checkpoint is the input folder with a new ``transformer/``; the other components are linked
or copied unchanged and the folder loads in diffusers' SkyReels-V2 pipelines as published ones do.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
           "model.safetensors", "model.safetensors.index.json")
# Keys whose values must agree between components (the DiT reads the VAE's latents and umT5's features).
LINKED_KEYS = (("transformer", "in_channels", "vae", "z_dim"), ("transformer", "text_dim", "text_encoder", "d_model"))


class CheckpointError(ValueError):
    """A checkpoint folder that cannot serve: names the file or config key and the fix."""


def _config(root: Path, component: str) -> dict:
    name = "tokenizer_config.json" if component == "tokenizer" else (
        "scheduler_config.json" if component == "scheduler" else "config.json")
    path = root / component / name
    if not path.is_file():
        raise CheckpointError(f"{root}: missing {component}/{name}; a diffusers SkyReels-V2 / Wan2.1 folder has "
                              f"{', '.join(COMPONENTS)} (build one with `reelflow init-checkpoint --out DIR`)")
    return json.loads(path.read_text())


def check_checkpoint(path: str, expect_transformer: dict | None = None) -> dict[str, dict]:
    """Validate a diffusers checkpoint folder; returns each component's config.

    ``expect_transformer``: config values the DiT must have (e.g. the previous stage's architecture), so
    a stage never starts from a checkpoint of another size with a confusing shape error later."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder {root} does not exist; set train.base_checkpoint to a diffusers "
                              "folder or leave it null to build a random one of train.init_profile")
    if not (root / "model_index.json").is_file():
        raise CheckpointError(f"{root}: missing model_index.json (not a diffusers pipeline folder)")
    configs = {c: _config(root, c) for c in COMPONENTS}
    for component in ("transformer", "vae", "text_encoder"):
        if not any((root / component / w).is_file() for w in WEIGHTS):
            raise CheckpointError(f"{root}: missing weights in {component}/ (expected one of {', '.join(WEIGHTS)})")
    for a, key_a, b, key_b in LINKED_KEYS:
        if (a, key_a) == ("transformer", "in_channels") and configs[a].get("image_dim") is not None:
            # An I2V DiT reads noisy latents + 4 mask channels + condition latents (models.i2v) and predicts z_dim.
            key_a = "out_channels"
            if configs[a].get("in_channels") != 2 * configs[b].get(key_b, 0) + 4:
                raise CheckpointError(f"{root}: transformer/config.json in_channels={configs[a].get('in_channels')} "
                                      f"of an I2V DiT must be 2 * vae z_dim + 4 = {2 * configs[b].get(key_b, 0) + 4}")
        if configs[a].get(key_a) != configs[b].get(key_b):
            raise CheckpointError(f"{root}: {a}/config.json {key_a}={configs[a].get(key_a)} does not match "
                                  f"{b}/config.json {key_b}={configs[b].get(key_b)}")
    for key, value in (expect_transformer or {}).items():
        got = configs["transformer"].get(key)
        if got != value:
            raise CheckpointError(f"{root}: transformer/config.json {key}={got!r}, expected {value!r} "
                                  "(the checkpoint is of another architecture than this stage's)")
    return configs


def load_transformer(path: str, dtype: torch.dtype = torch.float32):
    from diffusers import SkyReelsV2Transformer3DModel

    check_checkpoint(path)
    return SkyReelsV2Transformer3DModel.from_pretrained(Path(path) / "transformer", torch_dtype=dtype)


def architecture(config) -> dict:
    """The config keys that define the DiT's shape (what a later stage expects of its input), from a DiT's
    ``config`` or its ``transformer/config.json`` as ``check_checkpoint`` returns it."""
    keys = ("patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
            "text_dim", "freq_dim", "ffn_dim", "num_layers")
    return {k: (list(v) if isinstance(v, tuple) else v) for k in keys if (v := config.get(k)) is not None}


def without_fps_embedding(model):
    """The same DiT with the learnable FPS embedding removed (report section 3.4.3: the 540p SFT drops it)."""
    from diffusers import SkyReelsV2Transformer3DModel

    if not model.config.inject_sample_info:
        return model
    stripped = SkyReelsV2Transformer3DModel.from_config({**model.config, "inject_sample_info": False})
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("fps_embedding.", "fps_projection."))}
    stripped.load_state_dict(state, strict=True)
    dtype = next(model.parameters()).dtype
    return stripped if dtype == torch.float32 else stripped.to(dtype)


def _link_or_copy(src: Path, dst: Path) -> None:
    # Hard links cost no disk for the multi-GB VAE / umT5 files; copy across filesystems.
    try:
        shutil.copytree(src, dst, copy_function=os.link)
    except OSError:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)


def pipeline_for(transformer) -> str:
    """The diffusers pipeline a DiT serves: the DF pipelines feed the FPS embedding; without one (after the
    540p SFT, section 3.4.3) it is the full-sequence T2V model of ``SkyReelsV2Pipeline``."""
    if transformer.config.get("image_dim") is not None:  # widened for first-frame conditioning (models.i2v)
        return "SkyReelsV2ImageToVideoPipeline"
    if transformer.config.inject_sample_info:
        return "SkyReelsV2DiffusionForcingPipeline"
    return "SkyReelsV2Pipeline"


def write_checkpoint(source: str, transformer, out_dir: str, pipeline_class: str | None = None) -> str:
    """``out_dir`` = ``source`` with ``transformer`` saved in place of its DiT (out_dir must not exist);
    model_index.json names ``pipeline_class`` (default: the one the DiT serves)."""
    src, out = Path(source), Path(out_dir)
    out.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name in ("transformer", "model_index.json"):
            continue
        if entry.is_dir():
            _link_or_copy(entry, out / entry.name)
        else:
            shutil.copy2(entry, out / entry.name)
    index = json.loads((src / "model_index.json").read_text())
    index["_class_name"] = pipeline_class or pipeline_for(transformer)
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    transformer.save_pretrained(out / "transformer", safe_serialization=True)
    return str(out)
