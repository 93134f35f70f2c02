"""The first-frame conditioning objective (report section 5.5: the T2V model fine-tuned into I2V).

Flow matching as the T2V stages train it (Eq. 1-3, one logit-normal t per sample, loss over every latent
frame), with the I2V transformer's extra inputs built as diffusers' ``SkyReelsV2ImageToVideoPipeline``
builds them at inference (``models.i2v``): the condition image is the sample's first frame, here the VAE's
reconstruction of it from the cached first latent frame (the Wan VAE is causal in time, so that frame
encodes the first pixel frame alone; no second pass over the videos). From it come the condition latents
(image + grey frames through the VAE), the first-frame mask, and the CLIP image features.

Cost: one VAE decode of a latent frame, one VAE encode of the condition video and one CLIP forward per
sample, on the training device, all without gradients; the VAE encode dominates. A sample's condition is a
function of its latent alone, so the last ``memo`` samples' conditions are kept (on the CPU) and reused when an
epoch comes back to them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from infra.config_train import TrainConfig
from models import flow_matching as fm
from models import i2v
from tasks.train.lib.data import Batch
from tasks.train.lib.loop import step_noise


class FirstFrameConditioning:
    def __init__(self, cfg: TrainConfig, checkpoint_dir: str, image_encoder_dir: str, device: str = "cpu",
                 memo: int = 64):
        from diffusers import AutoencoderKLWan

        from models.i2v_checkpoint import load_image_encoder

        self.cfg = cfg
        # fp32 VAE, as the pipelines load it; frozen: only the DiT trains (report section 3.3).
        self.vae = AutoencoderKLWan.from_pretrained(f"{checkpoint_dir}/vae", torch_dtype=torch.float32).eval().to(device)
        self.vae.requires_grad_(False)
        self.image_encoder, self.image_processor = load_image_encoder(image_encoder_dir, device)
        self.memo, self._kept = memo, OrderedDict()

    def noise(self, seed: int, step: int, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return step_noise(seed, step, batch.latents, self.cfg)

    @torch.no_grad()
    def condition(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(condition [B, 4 + z, F, h, w] = mask then condition latents, CLIP features [B, tokens, image_dim]),
        from the memo where a sample was seen (its first latent frame and shape are the key)."""
        keys = [hashlib.sha1(repr(tuple(x.shape)).encode() + x[:, 0].float().cpu().numpy().tobytes()).hexdigest()
                for x in latents]
        todo = [i for i, k in enumerate(keys) if k not in self._kept]
        for i in todo:  # one sample at a time: its condition never depends on its batch-mates (exact resumes)
            condition, image = self._compute(latents[i:i + 1])
            self._kept[keys[i]] = (condition[0].cpu(), image[0].cpu())
        pairs = [self._kept[k] for k in keys]
        for k in keys:
            self._kept.move_to_end(k)
        while len(self._kept) > max(self.memo, len(keys)):
            self._kept.popitem(last=False)
        return torch.stack([c for c, _ in pairs]), torch.stack([e for _, e in pairs])

    def _compute(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, frames, h, w = latents.shape
        first = i2v.decode_first_frames(self.vae, latents)
        condition = torch.cat([i2v.first_frame_mask(b, frames, h, w).to(first.device),
                               i2v.condition_latents(self.vae, first, frames)], dim=1)
        return condition, i2v.image_embeddings(self.image_encoder, self.image_processor, i2v.to_uint8(first))

    def loss(self, model, batch: Batch, x0, t, autocast: bool) -> tuple[torch.Tensor, dict]:
        device = next(model.parameters()).device
        x1, x0, t = batch.latents.to(device), x0.to(device), t.to(device)
        condition, image = self.condition(x1)
        out = predict(model, batch, i2v.i2v_input(fm.interpolate(x1, x0, t), condition.to(device)), t,
                      image.to(device), autocast)
        with torch.no_grad():  # how well the conditioned frame is predicted, beside the whole clip's loss
            first = float(fm.loss(out[:, :, :1].detach(), x1[:, :, :1], x0[:, :, :1]))
        return fm.loss(out, x1, x0), {"first_frame_loss": first}


def predict(model, batch: Batch, x: torch.Tensor, t: torch.Tensor, image: torch.Tensor, autocast: bool) -> torch.Tensor:
    """The I2V DiT's output for input ``x`` (noisy latents + condition) at report-time t [B]."""
    dit = getattr(model, "module", model)  # a DeepSpeed engine wraps the DiT
    fps = batch.fps.tolist() if dit.config.inject_sample_info else None
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        return model(hidden_states=x, timestep=fm.model_timestep(t), encoder_hidden_states=i2v.pad_text(batch.text).to(x.device),
                     encoder_hidden_states_image=image, fps=fps, return_dict=False)[0]
