"""Long-video generation through diffusion forcing with the AD schedule (report sections 3.4.2, 5.4, 5.5).

The networks and the solver are the diffusers / transformers classes of a SkyReels-V2 checkpoint folder
(`models.checkpoint.load_pipeline_components`); this module is only the sampling loop:
windows of `base_num_frames` that re-read `overlap_history` frames of the video so far as clean
conditions (optionally re-noised, `addnoise_condition`), denoised row by row of the AD schedule
(`models.ad_schedule`), each causal block with its own multistep-solver state, with classifier-free
guidance. Noise is drawn in the same order and shapes as the reference pipeline, so a seed reproduces it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from models import df_dit
from models.ad_schedule import ADSchedule, plan_ad_schedule, solver_groups
from models.df_attention import FrameLayout, block_causal_attention
from models.df_plan import Plan, make_plan
from models.df_solver import UniPCCoefficients, make_solvers
from models.df_solver import supports as solver_supported
from models.df_text import clean_prompt, encode_prompts  # noqa: F401 (public here too)
from models.df_vae import StreamingDecoder, encode_frames
from models.generate_config import GenerateConfig
from models.teacache import TeaCache, teacache_blocks


@dataclass
class DFResult:
    frames: np.ndarray  # (frames, height, width, 3) float32 in [0, 1]; an extended video comes first
    latents: torch.Tensor  # (1, C, latent frames, h, w) normalized VAE latents of the generated sequence
    stats: dict | None = None  # TeaCache counters (`DFSampler.stats`) when it was on


class DFSampler:
    """Diffusion-forcing generation with the components of one checkpoint folder."""

    def __init__(self, components: dict, guidance_group=None):
        self.tokenizer = components["tokenizer"]
        self.text_encoder = components["text_encoder"]
        self.transformer = components["transformer"]
        self.vae = components["vae"]
        self.scheduler = components["scheduler"]
        self.layout = FrameLayout()  # shared with the attention processors during `generate`
        self.teacache: TeaCache | None = None  # the last generation's, when cfg.teacache
        # CFG-parallel: a torch.distributed group of two processes, rank 0 the conditional branch, rank 1 the
        # unconditional one (models/df_parallel.py); None runs both here.
        self.guidance_group = guidance_group
        self._fast = False  # this generation runs the row-pruned pass (models/df_dit.py)
        self._coefficients: UniPCCoefficients | None = None  # this generation's solver scalars

    @property
    def stats(self) -> dict:
        """Counters of the last generation: TeaCache's computed and skipped block-stack passes (one per DiT
        call; cond and uncond count apart unless batched), empty when TeaCache was off."""
        return {} if self.teacache is None else self.teacache.stats

    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 or [0, 1] float frame -> (1, C, 1, h, w) normalized latent (VAE mode)."""
        return encode_frames(self.vae, np.asarray(image)[None])

    def generate(self, cfg: GenerateConfig, image: np.ndarray | None = None, end_image: np.ndarray | None = None,
                 video: np.ndarray | None = None, progress: bool = False) -> DFResult:
        """The whole video in memory; see `stream` for the modes and `DFResult` for what comes back."""
        chunks = self.stream(cfg, image, end_image, video, progress)  # validates before allocating
        frames = np.empty((cfg.output_frames(0 if video is None else len(video)), cfg.height, cfg.width, 3),
                          dtype=np.float32)  # filled in place: one copy of the video, not chunks plus a concat
        latents, filled = [], 0
        for chunk, pixels in chunks:
            if chunk is not None:
                latents.append(chunk)
            frames[filled:filled + len(pixels)] = pixels
            filled += len(pixels)
        if filled != len(frames):
            raise RuntimeError(f"generated {filled} frames, expected {len(frames)}")
        return DFResult(frames=frames, latents=torch.cat(latents, dim=2), stats=self.stats or None)

    def stream(self, cfg: GenerateConfig, image: np.ndarray | None = None, end_image: np.ndarray | None = None,
               video: np.ndarray | None = None, progress: bool = False
               ) -> Iterator[tuple[torch.Tensor | None, np.ndarray]]:
        """Generate window by window, yielding (final latents the window adds, their decoded frames).

        Modes (report section 5.5, upstream README): text-to-video; image-to-video when `image` (the first
        frame) is given; start/end-frame control when `end_image` is given too (or alone); video extension
        when `video` ((frames, height, width, 3)) is given: its last `overlap_history` frames are encoded
        once as the clean history of window 0, `num_frames` counts that overlap as the reference
        video-to-video pipeline does, and the output is `video` followed by the new frames (the first
        item, with latents None); story mode when `cfg.story` holds one prompt per window.
        Only the history a window needs is kept between windows, so memory stays flat at any length.
        Settings and inputs are checked here, before the first window runs.
        """
        return self._stream(cfg, make_plan(cfg, self.transformer, self.vae, image, end_image, video), progress)

    def latent_stream(self, cfg: GenerateConfig, image: np.ndarray | None = None,
                      end_image: np.ndarray | None = None, video: np.ndarray | None = None) -> Iterator[torch.Tensor]:
        """`stream` without decoding: the final latents each window adds (a CFG-parallel peer's share)."""
        return self._stream_latents(cfg, make_plan(cfg, self.transformer, self.vae, image, end_image, video), False)

    def _stream(self, cfg: GenerateConfig, plan: Plan, progress: bool
                ) -> Iterator[tuple[torch.Tensor | None, np.ndarray]]:
        if plan.lead is not None:
            yield None, plan.lead
        decoder, skip = StreamingDecoder(self.vae), plan.skip
        for chunk in self._stream_latents(cfg, plan, progress):
            pixels = decoder(chunk)
            drop = min(skip, len(pixels))
            skip -= drop
            yield chunk, pixels[drop:]

    @torch.no_grad()
    def _stream_latents(self, cfg: GenerateConfig, plan: Plan, progress: bool) -> Iterator[torch.Tensor]:
        dit = self.transformer
        device, dtype = dit.device, dit.dtype
        guided = cfg.guidance_scale > 1.0
        unique = list(dict.fromkeys(plan.prompts))
        embeds = encode_prompts(self.tokenizer, self.text_encoder, unique + ([cfg.negative_prompt] if guided else []),
                                cfg.max_sequence_length).to(dtype)
        texts = {p: torch.cat([embeds[i:i + 1]] + ([embeds[-1:]] if guided else [])) for i, p in enumerate(unique)}
        # The row-pruned DiT pass (models/df_dit.py); TeaCache wraps the diffusers block loop instead.
        fast = cfg.prune_rows and not cfg.teacache and df_dit.supports(dit)
        if self.guidance_group is not None and not (fast and guided):
            raise ValueError("CFG-parallel generation needs guidance_scale > 1 (two branches) and teacache off")
        if fast:  # cross-attention keys/values of each prompt: once per generation, not per row and pass
            texts = {p: df_dit.text_state(dit, text) for p, text in texts.items()}

        scheduler = self.scheduler
        if cfg.flow_shift is not None:
            scheduler = type(scheduler).from_config(scheduler.config, flow_shift=cfg.flow_shift)
        scheduler.set_timesteps(cfg.num_inference_steps, device=device)
        # The solver's per-step scalars, computed once for every block of every window (models/df_solver.py).
        self._coefficients = UniPCCoefficients(scheduler, device) if solver_supported(scheduler) else None
        block = cfg.causal_block_size or dit.config.num_frame_per_block
        # The SkyReels-V2 1.3B DiT conditions on frame rate: class 0 for 16 fps, 1 otherwise.
        fps_ids = [0 if cfg.fps == 16 else 1]
        self._fast = fast

        p_t, p_h, p_w = dit.config.patch_size
        h, w = cfg.height // 8, cfg.width // 8
        layout = self.layout = FrameLayout(tokens_per_frame=(h // p_h) * (w // p_w))
        noise_gen = torch.Generator("cpu").manual_seed(cfg.seed)
        # Re-noising of history draws from its own stream (the reference uses torch's global generator).
        condition_gen = torch.Generator("cpu").manual_seed(cfg.seed + 1)

        history = None if plan.history is None else plan.history.to(device)
        windows = plan.windows
        self.teacache = TeaCache(cfg.teacache_threshold, cfg.teacache_retention_steps) if cfg.teacache else None
        tea = teacache_blocks(dit, self.teacache, layout) if self.teacache is not None else nullcontext()
        attention = nullcontext() if fast else block_causal_attention(dit, layout)
        with attention, tea, \
                tqdm(total=len(windows), desc="windows", disable=not progress) as bar:
            for index, (win, prompt) in enumerate(zip(windows, plan.prompts, strict=True)):
                shape = (1, dit.config.in_channels, win.num_frames, h, w)
                latents = torch.randn(shape, generator=noise_gen, dtype=torch.float32).to(device)
                prefix = win.num_clean_prefix
                if prefix:
                    latents[:, :, :prefix] = history[:, :, :prefix]
                suffix = 0
                if plan.end is not None and index == len(windows) - 1:
                    latents, suffix = torch.cat([latents, plan.end.to(device)], dim=2), plan.end.shape[2]
                schedule = plan_ad_schedule(cfg.num_inference_steps, latents.shape[2], block, cfg.ar_step, prefix,
                                            suffix)
                layout.block_ends = [e for _, e in schedule.blocks] if block > 1 else None
                latents = self._denoise_window(latents, schedule, scheduler, texts[prompt], cfg, fps_ids,
                                               condition_gen)[:, :, :win.num_frames]
                if index + 1 < len(windows):
                    history = latents[:, :, latents.shape[2] - windows[index + 1].keep_from:].clone()
                bar.update()
                yield latents[:, :, win.keep_from:].clone()  # not a view: it would pin the whole window

    def _denoise_window(self, latents, schedule: ADSchedule, scheduler, text, cfg, fps_ids, condition_gen):
        dit = self.transformer
        dit_dtype = dit.dtype  # a diffusers property that walks every parameter: once per window, not per row
        template = scheduler.timesteps
        timesteps = torch.from_numpy(schedule.timesteps(template.cpu().numpy())).to(latents.device)
        groups = solver_groups(schedule)
        solvers = make_solvers(scheduler, len(groups), cfg.num_inference_steps, latents.device,
                               coefficients=self._coefficients)
        prefix = schedule.num_clean_prefix
        noise_factor = 0.001 * cfg.addnoise_condition  # upstream: addnoise_condition=20 -> 2% noise

        layout = self.layout
        block_ends = layout.block_ends
        causal = block_ends is not None
        # The reference re-noises history with fresh noise every row, so nothing after it is reusable then.
        use_cache = causal and cfg.kv_cache and not (cfg.addnoise_condition > 0 and prefix)
        layout.kv, layout.cached_frames = ({} if use_cache else None), 0
        tea = self.teacache
        if tea is not None:
            tea.new_window()
        for row, (active_start, active_end) in enumerate(schedule.active_spans):
            # Block-causal attention: frames after the last started block cannot change any output we keep,
            # and whole finished blocks before the first active frame only feed their cached keys/values.
            start = layout.cached_frames
            end = active_end if causal and cfg.skip_unstarted_blocks else schedule.num_frames
            layout.store_until = max([e for e in block_ends if e <= active_start], default=0) if use_cache else 0
            layout.block_ends = None if block_ends is None else [e for e in block_ends if e <= end]
            model_input = latents[:, :, start:end].to(dit_dtype)
            t = timesteps[row][None, start:end].clone()
            if cfg.addnoise_condition > 0 and prefix:
                # Report section 5.4 / upstream README: slightly re-noise the history to smooth long videos.
                history = model_input[:, :, :prefix]
                noise = torch.randn(history.shape, generator=condition_gen, dtype=history.dtype)
                model_input = model_input.clone()
                model_input[:, :, :prefix] = history * (1.0 - noise_factor) + noise.to(history.device) * noise_factor
                t[:, :prefix] = int(cfg.addnoise_condition)
            if tea is not None:
                # A pass that stores newly finished blocks' keys/values must run (a skipped one stores none).
                tea.begin_row(start, end, schedule.update_mask[row, start:end], schedule.step_index[row, start:end],
                              cfg.num_inference_steps, force=use_cache and layout.store_until > layout.cached_frames)
            if self._fast:  # predictions of the frames this row updates only
                pred_first = active_start
                pred = self._guided_fast(model_input, t, text, cfg, fps_ids[0], (active_start, active_end))
            else:
                pred_first = start
                pred = self._guided_velocity(model_input, t, text, cfg, fps_ids)
            layout.cached_frames = max(layout.cached_frames, layout.store_until)
            for (lo, hi), solver in zip(groups, solvers, strict=True):
                if schedule.update_mask[row, lo]:
                    k = int(schedule.step_index[row, lo])
                    latents[:, :, lo:hi] = solver.step(pred[:, :, lo - pred_first:hi - pred_first], template[k - 1],
                                                       latents[:, :, lo:hi])
        layout.block_ends, layout.kv, layout.cached_frames = block_ends, None, 0
        return latents

    def _guided_velocity(self, x, t, text, cfg: GenerateConfig, fps_ids):
        """Velocity under classifier-free guidance; `text` holds the prompt and, when guided, the negative."""
        layout = self.layout
        if text.shape[0] == 1:
            layout.pass_name = "cond"
            return self._velocity(x, t, text, fps_ids)
        if cfg.batch_guidance:
            # One batch of two. The DiT adds the fps embedding per frame before splitting the batch, which
            # broadcasts only from a single fps id: pass one, it is the same for both halves.
            layout.pass_name = "batched"
            cond, uncond = self._velocity(x.expand(2, -1, -1, -1, -1), t.expand(2, -1), text, fps_ids).chunk(2)
        else:
            layout.pass_name = "cond"
            cond = self._velocity(x, t, text[:1], fps_ids)
            layout.pass_name = "uncond"
            uncond = self._velocity(x, t, text[1:], fps_ids)
        return uncond + cfg.guidance_scale * (cond - uncond)

    def _guided_fast(self, x, t, state, cfg: GenerateConfig, fps_id: int, out: tuple[int, int]):
        """`_guided_velocity` through the row-pruned pass: `state` is the prompt's (and negative's) text state."""
        layout, dit = self.layout, self.transformer
        if len(state[0][0]) == 1:
            layout.pass_name = "cond"
            return df_dit.velocity(dit, x, t, state, fps_id, layout, out)
        if self.guidance_group is not None:  # this process's branch; the other comes from its peer
            import torch.distributed as dist

            rank = dist.get_rank(self.guidance_group)
            layout.pass_name = ("cond", "uncond")[rank]
            mine = df_dit.velocity(dit, x, t, [(k[rank:rank + 1], v[rank:rank + 1]) for k, v in state], fps_id,
                                   layout, out).contiguous()
            both = [torch.empty_like(mine) for _ in range(2)]
            dist.all_gather(both, mine, group=self.guidance_group)
            cond, uncond = both
        elif cfg.batch_guidance:
            layout.pass_name = "batched"
            cond, uncond = df_dit.velocity(dit, x, t, state, fps_id, layout, out).chunk(2)
        else:
            layout.pass_name = "cond"
            cond = df_dit.velocity(dit, x, t, [(k[:1], v[:1]) for k, v in state], fps_id, layout, out)
            layout.pass_name = "uncond"
            uncond = df_dit.velocity(dit, x, t, [(k[1:], v[1:]) for k, v in state], fps_id, layout, out)
        return uncond + cfg.guidance_scale * (cond - uncond)

    def _velocity(self, x, t, text, fps_ids):
        return self.transformer(hidden_states=x, timestep=t, encoder_hidden_states=text,
                                enable_diffusion_forcing=True, fps=fps_ids, return_dict=False)[0]

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Normalized latents -> (frames, H, W, 3) in [0, 1] through the Wan VAE."""
        return StreamingDecoder(self.vae)(latents)


def generate_df(components: dict, cfg: GenerateConfig, image: np.ndarray | None = None,
                end_image: np.ndarray | None = None, video: np.ndarray | None = None,
                progress: bool = False) -> DFResult:
    """Generate `cfg` through diffusion forcing in any mode; see `DFSampler.stream`."""
    return DFSampler(components).generate(cfg, image=image, end_image=end_image, video=video, progress=progress)
