"""Where a stage's weights live, and how they enter the model registry.

Every weight-producing stage (training, Flow-DPO, diffusion forcing, SFT, the reward model) publishes its
folder inside its own stage folder and registers it in MLflow under the stage's name as alias. Stages
that read weights (latents, pairs, dpo, video) resolve the folder from the producing stage's manifest
through here, so no stage has to import the stage that trained the weights.
"""

from __future__ import annotations

from infra import storage
from infra.config import value_hash
from infra.manifest import Manifest
from infra.stage import StageContext

CHECKPOINT = "checkpoint"  # the diffusers folder of a DiT stage: <stage>/checkpoint/
REWARD_MODEL = "reward_model"  # the reward model folder of the reward stage: reward/reward_model/
CAPTIONER = "captioner"  # the distilled captioner's folder: captioner-distill/captioner/
# "dmd": the few-step generator of distill-dmd, a model of its own (it samples differently, unguided)
# "i2v": sft-i2v's image-to-video DiT (another input layout and a CLIP image encoder: a model of its own)
_FOLDERS = {"dit": CHECKPOINT, "reward": REWARD_MODEL, "dmd": CHECKPOINT, "captioner": CAPTIONER, "i2v": CHECKPOINT,
            "camera": CHECKPOINT}  # "camera": sft-camera's Camera Director, beside the main line


def checkpoint_dir_of(stage_uri: str) -> str:
    return storage.join(stage_uri, CHECKPOINT)


def checkpoint_dir(manifest: Manifest) -> str:
    """The diffusers folder a DiT stage (pretrain-*, sft-*, dpo-*, forcing) published."""
    return checkpoint_dir_of(manifest.uri)


def reward_model_dir(manifest: Manifest) -> str:
    """The reward model folder a ``reward`` stage published."""
    return storage.join(manifest.uri, REWARD_MODEL)


def steps_dir(ctx: StageContext, name: str, key: str) -> str:
    """The stage's step checkpoints, under the run (local folder or S3 prefix: a restarted worker on any
    node resumes from them)."""
    return storage.join(ctx.run_uri, ".steps", f"{name}-{value_hash(key)}")


def register(ctx: StageContext, published: Manifest, kind: str) -> str:
    """Register the folder ``published`` holds as a version of this run's ``kind`` model ("dit", "reward", "dmd", "i2v" or "captioner"),
    aliased by the stage's name. A resumed run whose alias already points at the folder adds nothing."""
    if kind not in _FOLDERS:
        raise ValueError(f"model kind {kind!r} is unknown; known: {', '.join(_FOLDERS)}")
    folder = storage.join(published.uri, _FOLDERS[kind])
    return ctx.tracker.ensure_registered(f"{ctx.cfg.tracking.experiment}-{ctx.profile}-{kind}", folder,
                                         published.stats.get("mlflow_run"), published.stage,
                                         {"reelflow.run_id": ctx.run_id})
