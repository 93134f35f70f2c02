"""Reading a published reward model back: the ``reward`` stage writes it, ``dpo`` scores its samples with it.

Here and not in the reward stage so that dpo depends on the model folder, not on the stage that trained it.
"""

from __future__ import annotations

import os
import tempfile

from infra import storage
from infra.checkpoints import reward_model_dir
from infra.manifest import Manifest
from models.reward_model import RewardModel


def load_reward_model(manifest: Manifest) -> RewardModel:
    folder = reward_model_dir(manifest)
    if not storage.is_remote(folder):
        return RewardModel.load(folder)
    with tempfile.TemporaryDirectory(prefix="reelflow-reward-") as local:
        for uri in storage.list_files(folder):
            target = os.path.join(local, uri.removeprefix(folder).lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            storage.filesystem(uri).get(uri, target)
        return RewardModel.load(local)
