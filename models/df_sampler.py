"""Long-video text-to-video through diffusion forcing with the AD schedule (report sections 3.4.2, 5.4).

The networks and the solver are the diffusers / transformers classes of a SkyReels-V2 checkpoint folder
(`models.checkpoint.load_pipeline_components`); this module is only the sampling loop:
windows of `base_num_frames` that re-read `overlap_history` frames of the video so far as clean
conditions (optionally re-noised, `addnoise_condition`), denoised row by row of the AD schedule
(`models.ad_schedule`), each causal block with its own multistep-solver state, with classifier-free
guidance. Noise is drawn in the same order and shapes as the reference pipeline, so a seed reproduces it.
"""

from __future__ import annotations

import html
import re
from copy import deepcopy
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from models.ad_schedule import ADSchedule, Window, plan_ad_schedule, plan_windows
from models.df_attention import FrameLayout, block_causal_attention
from models.generate_config import GenerateConfig, latent_frames


@dataclass
class DFResult:
    frames: np.ndarray  # (num_frames, height, width, 3) float32 in [0, 1]
    latents: torch.Tensor  # (1, C, latent frames, h, w), normalized VAE latents


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


def _solver_groups(schedule: ADSchedule) -> list[tuple[int, int]]:
    """Frame ranges that always share a step history (a block minus its clean-prefix frames):
    one solver state steps each range at once instead of one per frame."""
    prefix = schedule.num_clean_prefix
    return [(max(s, prefix), e) for s, e in schedule.blocks if max(s, prefix) < e]


class DFSampler:
    """Diffusion-forcing generation with the components of one checkpoint folder."""

    def __init__(self, components: dict):
        self.tokenizer = components["tokenizer"]
        self.text_encoder = components["text_encoder"]
        self.transformer = components["transformer"]
        self.vae = components["vae"]
        self.scheduler = components["scheduler"]
        self.layout = FrameLayout()  # shared with the attention processors during `generate`

    @torch.no_grad()
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 or [0, 1] float frame -> (1, C, 1, h, w) normalized latent (VAE mode)."""
        pixels = torch.from_numpy(np.asarray(image)).float()
        if np.asarray(image).dtype == np.uint8:
            pixels = pixels / 255.0
        pixels = (pixels.permute(2, 0, 1)[None, :, None] * 2.0 - 1.0).to(self.vae.device, self.vae.dtype)
        latent = self.vae.encode(pixels).latent_dist.mode().float()
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, cfg.z_dim, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, cfg.z_dim, 1, 1, 1)
        return (latent - mean.to(latent.device)) * (1.0 / std.to(latent.device))

    @torch.no_grad()
    def generate(self, cfg: GenerateConfig, image: np.ndarray | None = None, progress: bool = False) -> DFResult:
        """Text-to-video, or image-to-video when `image` (the first frame, (height, width, 3)) is given:
        the image's latent is then a clean condition of the first window (report section 5.5, I2V via DF)."""
        dit = self.transformer
        device, dtype = dit.device, dit.dtype
        guided = cfg.guidance_scale > 1.0
        prompts = [cfg.prompt] + ([cfg.negative_prompt] if guided else [])
        text = encode_prompts(self.tokenizer, self.text_encoder, prompts, cfg.max_sequence_length).to(dtype)

        scheduler = self.scheduler
        if cfg.flow_shift is not None:
            scheduler = type(scheduler).from_config(scheduler.config, flow_shift=cfg.flow_shift)
        scheduler.set_timesteps(cfg.num_inference_steps, device=device)
        block = cfg.causal_block_size or dit.config.num_frame_per_block
        # The SkyReels-V2 1.3B DiT conditions on frame rate: class 0 for 16 fps, 1 otherwise.
        fps_ids = [0 if cfg.fps == 16 else 1]

        total = latent_frames(cfg.num_frames)
        if cfg.is_long_video:
            windows = plan_windows(total, latent_frames(cfg.base_num_frames),
                                   latent_frames(cfg.overlap_history), block)
        else:
            windows = [Window(0, total, 0, 0)]
        first_frame = None
        if image is not None:
            if np.asarray(image).shape != (cfg.height, cfg.width, 3):
                raise ValueError(f"image must be ({cfg.height}, {cfg.width}, 3) to match height and width; "
                                 f"got {np.asarray(image).shape}: resize it first")
            first_frame = self.encode_image(image).to(device)
            windows[0] = replace(windows[0], num_clean_prefix=first_frame.shape[2])
        p_t, p_h, p_w = dit.config.patch_size
        h, w = cfg.height // 8, cfg.width // 8
        layout = self.layout = FrameLayout(tokens_per_frame=(h // p_h) * (w // p_w))
        noise_gen = torch.Generator("cpu").manual_seed(cfg.seed)
        # Re-noising of history draws from its own stream (the reference uses torch's global generator).
        condition_gen = torch.Generator("cpu").manual_seed(cfg.seed + 1)

        video = None
        bar = tqdm(total=len(windows), desc="windows", disable=not progress)
        with block_causal_attention(dit, layout):
            for win in windows:
                shape = (1, dit.config.in_channels, win.num_frames, h, w)
                latents = torch.randn(shape, generator=noise_gen, dtype=torch.float32).to(device)
                prefix = win.num_clean_prefix
                if prefix:
                    history = first_frame if video is None else video[:, :, win.video_start:]
                    latents[:, :, :prefix] = history[:, :, :prefix]
                schedule = plan_ad_schedule(cfg.num_inference_steps, win.num_frames, block, cfg.ar_step, prefix)
                layout.block_ends = [e for _, e in schedule.blocks] if block > 1 else None
                latents = self._denoise_window(latents, schedule, scheduler, text, cfg, fps_ids, condition_gen)
                video = latents if video is None else torch.cat([video, latents[:, :, win.keep_from:]], dim=2)
                bar.update()
        bar.close()
        return DFResult(frames=self.decode(video), latents=video)

    def _denoise_window(self, latents, schedule: ADSchedule, scheduler, text, cfg, fps_ids, condition_gen):
        dit = self.transformer
        template = scheduler.timesteps
        timesteps = torch.from_numpy(schedule.timesteps(template.cpu().numpy())).to(latents.device)
        groups = _solver_groups(schedule)
        solvers = []
        for _ in groups:
            solver = deepcopy(scheduler)
            solver.set_timesteps(cfg.num_inference_steps, device=latents.device)
            solvers.append(solver)
        prefix = schedule.num_clean_prefix
        noise_factor = 0.001 * cfg.addnoise_condition  # upstream: addnoise_condition=20 -> 2% noise

        layout = self.layout
        block_ends = layout.block_ends
        causal = block_ends is not None
        # The reference re-noises history with fresh noise every row, so nothing after it is reusable then.
        use_cache = causal and cfg.kv_cache and not (cfg.addnoise_condition > 0 and prefix)
        layout.kv, layout.cached_frames = ({} if use_cache else None), 0
        for row, (active_start, active_end) in enumerate(schedule.active_spans):
            # Block-causal attention: frames after the last started block cannot change any output we keep,
            # and whole finished blocks before the first active frame only feed their cached keys/values.
            start = layout.cached_frames
            end = active_end if causal and cfg.skip_unstarted_blocks else schedule.num_frames
            layout.store_until = max([e for e in block_ends if e <= active_start], default=0) if use_cache else 0
            layout.block_ends = None if block_ends is None else [e for e in block_ends if e <= end]
            model_input = latents[:, :, start:end].to(dit.dtype)
            t = timesteps[row][None, start:end].clone()
            if cfg.addnoise_condition > 0 and prefix:
                # Report section 5.4 / upstream README: slightly re-noise the history to smooth long videos.
                history = model_input[:, :, :prefix]
                noise = torch.randn(history.shape, generator=condition_gen, dtype=history.dtype)
                model_input = model_input.clone()
                model_input[:, :, :prefix] = history * (1.0 - noise_factor) + noise.to(history.device) * noise_factor
                t[:, :prefix] = int(cfg.addnoise_condition)
            layout.pass_name = "cond"
            pred = self._velocity(model_input, t, text[:1], fps_ids)
            if text.shape[0] > 1:
                layout.pass_name = "uncond"
                uncond = self._velocity(model_input, t, text[1:], fps_ids)
                pred = uncond + cfg.guidance_scale * (pred - uncond)
            layout.cached_frames = max(layout.cached_frames, layout.store_until)
            for (lo, hi), solver in zip(groups, solvers, strict=True):
                if schedule.update_mask[row, lo]:
                    k = int(schedule.step_index[row, lo])
                    latents[:, :, lo:hi] = solver.step(pred[:, :, lo - start:hi - start], template[k - 1],
                                                       latents[:, :, lo:hi], return_dict=False)[0]
        layout.block_ends, layout.kv, layout.cached_frames = block_ends, None, 0
        return latents

    def _velocity(self, x, t, text, fps_ids):
        return self.transformer(hidden_states=x, timestep=t, encoder_hidden_states=text,
                                enable_diffusion_forcing=True, fps=fps_ids, return_dict=False)[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Normalized latents -> (frames, H, W, 3) in [0, 1] through the Wan VAE."""
        vae = self.vae
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(shape)
        std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(shape)
        x = latents.float() * std.to(latents.device) + mean.to(latents.device)
        video = vae.decode(x.to(vae.dtype), return_dict=False)[0]
        return (video[0].float() * 0.5 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).cpu().numpy()


def generate_df(components: dict, cfg: GenerateConfig, image: np.ndarray | None = None,
                progress: bool = False) -> DFResult:
    """Text- or image-to-video of `cfg.num_frames` frames through diffusion forcing; see `DFSampler`."""
    return DFSampler(components).generate(cfg, image=image, progress=progress)
