"""The image side of an I2V diffusers folder: the CLIP vision encoder and its image processor.

``SkyReelsV2ImageToVideoPipeline`` reads ``image_encoder/`` (transformers' ``CLIPVisionModelWithProjection``)
and ``image_processor/`` (``CLIPImageProcessor``, as the published Wan2.1-I2V diffusers folders ship it) beside
the T2V components. The published model uses open-clip ViT-H/14 (1280 wide, 32 layers); with no folder
configured a random encoder of the profile's size is built once, as the base DiT is (``models.checkpoint``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

ENCODER, PROCESSOR = "image_encoder", "image_processor"
I2V_PIPELINE = "SkyReelsV2ImageToVideoPipeline"

# CLIPVisionConfig keyword arguments and the processor's square input size, per profile.
PROFILES = {
    "tiny": (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8, projection_dim=16), 32),
    # ViT-H/14 (open-clip, what Wan2.1-I2V and SkyReels-V2-I2V load): 257 tokens of width 1280.
    "wan-1.3b": (dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                      image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu"), 224),
}


def build_image_encoder(profile: str, out_dir: str, seed: int = 0) -> str:
    """Write ``out_dir/image_encoder`` and ``out_dir/image_processor`` with random weights of ``profile``
    (published with one rename: a crash leaves no half-written folder)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    if profile not in PROFILES:
        raise ValueError(f"image encoder profile must be one of {sorted(PROFILES)}, got {profile!r}")
    kwargs, size = PROFILES[profile]
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            CLIPVisionModelWithProjection(CLIPVisionConfig(**kwargs)).eval().save_pretrained(tmp / ENCODER)
        CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
            tmp / PROCESSOR)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out)


def check_image_encoder(folder: str) -> int:
    """The encoder's hidden size (the DiT's ``image_dim``); a clear error when the folder is not one."""
    for part, name in ((ENCODER, "config.json"), (PROCESSOR, "preprocessor_config.json")):
        if not (Path(folder) / part / name).is_file():
            raise FileNotFoundError(f"{folder}: missing {part}/{name}; train.image_encoder must name a folder with "
                                    f"{ENCODER}/ (CLIPVisionModelWithProjection) and {PROCESSOR}/ (CLIPImageProcessor), "
                                    "or be null to build a random one of train.init_profile")
    config = json.loads((Path(folder) / ENCODER / "config.json").read_text())
    return int(config.get("vision_config", config)["hidden_size"])


def load_image_encoder(folder: str, device: str = "cpu"):
    """(encoder, processor) of an image-encoder folder, frozen."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection.from_pretrained(Path(folder) / ENCODER).eval().to(device)
    encoder.requires_grad_(False)
    return encoder, CLIPImageProcessor.from_pretrained(Path(folder) / PROCESSOR)


def add_image_encoder(checkpoint: str, encoder_folder: str) -> str:
    """Copy the image encoder and processor into a written I2V checkpoint folder and name them, with the
    pipeline, in its model_index.json."""
    root = Path(checkpoint)
    for part in (ENCODER, PROCESSOR):
        shutil.rmtree(root / part, ignore_errors=True)  # an I2V source folder's own copy is replaced
        shutil.copytree(Path(encoder_folder) / part, root / part)
    index = json.loads((root / "model_index.json").read_text())
    index.update({"_class_name": I2V_PIPELINE, ENCODER: ["transformers", "CLIPVisionModelWithProjection"],
                  PROCESSOR: ["transformers", "CLIPImageProcessor"]})
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return str(root)
