"""Flow-DPO as a training-loop objective (report section 3.4.1, Eq. 4): preference pairs as a cache, their
batches, the loss against a frozen reference, and the implicit reward margin measured at fixed draws.

The loop (``tasks.train.lib.loop.train``) sees a cache of pairs (``buckets``/``get``/``collate``) and an objective
(``noise``/``loss``), so step checkpoints, bit-exact resume and per-step logging are the pretraining ones.
A pair's chosen and rejected latents share one t and one noise (``models.flow_dpo.shared_noise_pair``) and
run through the DiT in one stacked forward; so does the reference, without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infra.config_train import TrainConfig, fps_index
from models import flow_matching as fm
from models.flow_dpo import flow_dpo_loss, flow_matching_error, shared_noise_pair
from tasks.train.lib.data import Batch, pad_text, shard_rows, tokens_per_sample
from tasks.train.lib.loop import predict, step_generator


@dataclass
class Pair:
    """One preference pair: normalised latents [C, F, h, w] (the trainer's space), the prompt's umT5 features."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    text: torch.Tensor  # [L, D], unpadded
    fps: int

    @property
    def latent(self) -> torch.Tensor:  # what the loop sizes batches by (both videos share the shape)
        return self.chosen


@dataclass
class PairBatch:
    chosen: torch.Tensor  # [B, C, F, h, w]
    rejected: torch.Tensor
    text: torch.Tensor  # [B, text_len, D], zero-padded
    fps: torch.Tensor  # [B] FPS-embedding indices
    tokens: int  # DiT tokens of both videos of every pair

    def shard(self, rank: int, world: int) -> PairBatch:
        rows, _ = shard_rows(self.chosen.shape[0], rank, world)
        return PairBatch(self.chosen[rows], self.rejected[rows], self.text[rows], self.fps[rows],
                         self.tokens // world)

    def stacked(self, chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, Batch]:
        """(x, Batch) running chosen then rejected through the DiT in one forward of 2B."""
        x = torch.cat([chosen, rejected])
        return x, Batch(x, torch.cat([self.text, self.text]), torch.cat([self.fps, self.fps]), self.tokens)


class PairCache:
    """The round's pairs in memory, readable by the training loop (one bucket: every video has one shape)."""

    def __init__(self, pairs: list[Pair]):
        self.pairs = pairs

    def buckets(self) -> dict[str, list[int]]:
        return {"pairs": list(range(len(self.pairs)))}

    def get(self, i: int) -> Pair:
        return self.pairs[i]

    @staticmethod
    def collate(pairs: list[Pair], text_len: int) -> PairBatch:
        text = pad_text([p.text for p in pairs], text_len)
        chosen = torch.stack([p.chosen for p in pairs])
        fps = torch.tensor([fps_index(p.fps) for p in pairs], dtype=torch.long)
        return PairBatch(chosen, torch.stack([p.rejected for p in pairs]), text, fps,
                         2 * len(pairs) * tokens_per_sample(tuple(chosen.shape[1:])))


def pair_errors(model, batch: PairBatch, x0: torch.Tensor, t: torch.Tensor, autocast: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair flow-matching errors (Eq. 3) of the chosen and rejected videos at shared t and noise x0."""
    device = next(model.parameters()).device
    x_w, x_l, x0, t = batch.chosen.to(device), batch.rejected.to(device), x0.to(device), t.to(device)
    noisy_w, noisy_l, v_w, v_l = shared_noise_pair(x_w, x_l, t, x0)
    xt, stacked = batch.stacked(noisy_w, noisy_l)
    out = predict(model, stacked, xt, torch.cat([t, t]), autocast)
    err = flow_matching_error(fm.report_prediction(out).float(), torch.cat([v_w, v_l]).float())
    return err.chunk(2)


class FlowDPO:
    """Eq. 4 with a frozen reference: the loop's objective for a ``PairCache``."""

    def __init__(self, reference, cfg: TrainConfig, beta: float):
        """``reference``: a DiT (e.g. offloaded to the CPU) or a DeepSpeed ZeRO-3 engine partitioning one."""
        reference.requires_grad_(False)
        reference.eval()  # not chained: a DeepSpeed engine's eval() returns None
        self.reference, self.cfg, self.beta = reference, cfg, beta

    def noise(self, seed: int, step: int, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """One logit-normal t and one noise per pair (shared by its two videos), a pure function of (seed, step)."""
        gen = step_generator(seed, step)
        return draw(batch, gen, self.cfg)

    def loss(self, model, batch: PairBatch, x0, t, autocast: bool) -> tuple[torch.Tensor, dict]:
        err_w, err_l = pair_errors(model, batch, x0, t, autocast)
        with torch.no_grad():  # the reference may sit elsewhere (CPU offload): only its errors move
            ref_w, ref_l = (e.to(err_w.device) for e in pair_errors(self.reference, batch, x0, t, autocast))
        return flow_dpo_loss(err_w, err_l, ref_w, ref_l, self.beta)


def draw(batch: PairBatch, gen: torch.Generator, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    t = fm.sample_t(batch.chosen.shape[0], gen, cfg.logit_normal_mean, cfg.logit_normal_std)
    return torch.randn(batch.chosen.shape, generator=gen, dtype=batch.chosen.dtype), t


@torch.no_grad()
def measure_margin(policy, objective: FlowDPO, cache: PairCache, text_len: int, batch_size: int,
                   draws: int, seed: int) -> dict[str, float]:
    """Eq. 4's metrics of ``policy`` against the objective's reference over every pair of ``cache``, each at
    ``draws`` (t, noise) draws that depend only on ``seed``: the same draws before and after a round."""
    gen = torch.Generator().manual_seed(seed)
    errors: list[list[torch.Tensor]] = [[], [], [], []]
    was_training = policy.training
    policy.eval()
    try:
        for _ in range(draws):
            for start in range(0, len(cache.pairs), batch_size):
                batch = cache.collate(cache.pairs[start:start + batch_size], text_len)
                x0, t = draw(batch, gen, objective.cfg)
                for bucket, err in zip(errors, (*pair_errors(policy, batch, x0, t, False),
                                                *pair_errors(objective.reference, batch, x0, t, False)), strict=True):
                    bucket.append(err.cpu())
    finally:
        policy.train(was_training)
    loss, metrics = flow_dpo_loss(*(torch.cat(e) for e in errors), objective.beta)
    return {"loss": loss.item(), **metrics}
