"""``reelflow generate`` and ``reelflow init-checkpoint``: long-video generation from the command line.

`register(main)` adds both commands to the ``reelflow`` click group. Like flows/cli.py this module imports
nothing heavy at the top: settings are validated (and a bad one refused, naming the fix) before torch,
Prefect or MLflow load.
"""

from __future__ import annotations

import os

import click

from infra.config import ConfigError, load_config


def _settings(**values) -> object:
    """A validated GenerateConfig, or a usage error that names the field and the fix."""
    from pydantic import ValidationError

    from models.generate_config import GenerateConfig

    try:
        return GenerateConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as err:
        lines = [(f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
                 for e in err.errors()]
        raise click.UsageError("; ".join(lines)) from None


def _generate_options(fn):
    options = [
        click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False),
                     help="diffusers SkyReels-V2 folder (reelflow init-checkpoint builds a tiny one)"),
        click.option("--prompt", help="what to generate (or --story)"),
        click.option("--negative-prompt", default="", show_default=True),
        click.option("--story", multiple=True, help="story mode: repeat, one prompt per window, in order"),
        click.option("--image", type=click.Path(exists=True, dir_okay=False), help="first frame (I2V)"),
        click.option("--end-image", type=click.Path(exists=True, dir_okay=False),
                     help="last frame to steer towards (start/end-frame control; causal_block_size 1)"),
        click.option("--video", type=click.Path(exists=True, dir_okay=False),
                     help="video to extend: its last --overlap-history frames condition the continuation, "
                          "and --num-frames counts that overlap"),
        click.option("--num-frames", type=int, default=97, show_default=True, help="1 + 4k pixel frames"),
        click.option("--base-num-frames", type=int, default=97, show_default=True,
                     help="frames per model window (1 + 4k)"),
        click.option("--overlap-history", type=int, help="frames re-read per window of a long video (17 or 37)"),
        click.option("--ar-step", type=int, default=0, show_default=True, help="0 = synchronous; 5 = async"),
        click.option("--causal-block-size", type=int, help="latent frames per causal block (5 for async)"),
        click.option("--addnoise-condition", type=float, default=0.0, show_default=True,
                     help="noise on history frames (20 recommended for long videos)"),
        click.option("--guidance-scale", type=float, default=6.0, show_default=True),
        click.option("--shift", type=float, help="flow shift (8 for T2V, 5 for I2V); default: the checkpoint's"),
        click.option("--steps", type=int, default=30, show_default=True, help="denoising steps"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--fps", type=int, default=24, show_default=True, help="frame rate: DiT condition and mp4"),
        click.option("--height", type=int, default=544, show_default=True, help="multiple of 16"),
        click.option("--width", type=int, default=960, show_default=True, help="multiple of 16"),
        click.option("--max-sequence-length", type=int, default=512, show_default=True, help="text tokens"),
        click.option("--out", required=True, type=click.Path(dir_okay=False), help="output mp4"),
        click.option("--frames-out", help="lossless frames too: a PNG folder, or one .npy file (float32 in [0, 1])"),
        click.option("--no-speedups", is_flag=True, help="reference-exact loop: no KV cache, block skipping "
                     "or batched guidance"),
        click.option("--teacache", is_flag=True, default=None, help="TeaCache (arXiv 2411.19108): skip the DiT "
                     "blocks on steps whose input changed little; faster, approximate (off by default)"),
        click.option("--teacache-threshold", type=float, help="TeaCache accumulated-change threshold (default "
                     "0.1; 0 computes every step, larger skips more)"),
        click.option("--teacache-retention", type=int, help="TeaCache: first steps of each frame always "
                     "computed (default 1)"),
        click.option("--profile", default="tiny", show_default=True, help="configs/profiles/<name>.yaml (tracking)"),
        click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="config override"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def register(main: click.Group) -> None:
    """Add `generate` and `init-checkpoint` to the reelflow command group."""

    @main.command("init-checkpoint")
    @click.option("--profile", default="tiny", show_default=True, help="tiny (CPU) or wan-1.3b (GPU)")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="new checkpoint folder")
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option("--full-sequence", is_flag=True, help="a full-sequence T2V checkpoint instead of diffusion forcing")
    def init_checkpoint_cmd(profile: str, out: str, seed: int, full_sequence: bool) -> None:
        """Write a diffusers SkyReels-V2 checkpoint folder with random weights."""
        from models.checkpoint import PROFILES, init_checkpoint

        if profile not in PROFILES:
            raise click.BadParameter(f"use one of {', '.join(sorted(PROFILES))}", param_hint="--profile")
        try:
            path = init_checkpoint(profile, out, seed=seed, diffusion_forcing=not full_sequence)
        except FileExistsError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"checkpoint written to {os.path.abspath(path)}")

    @main.command()
    @_generate_options
    def generate(checkpoint, prompt, negative_prompt, story, image, end_image, video, num_frames, base_num_frames,
                 overlap_history, ar_step, causal_block_size, addnoise_condition, guidance_scale, shift, steps,
                 seed, fps, height, width, max_sequence_length, out, frames_out, no_speedups, teacache,
                 teacache_threshold, teacache_retention, profile, overrides) -> None:
        """Generate a video: T2V, I2V, start/end frames, extension or story, through diffusion forcing."""
        if not prompt and not story:
            raise click.UsageError("give --prompt, or --story once per window for story mode")
        speedups = None if not no_speedups else False
        gen = _settings(
            prompt=prompt or "", story=list(story), negative_prompt=negative_prompt, num_frames=num_frames,
            base_num_frames=base_num_frames, overlap_history=overlap_history, ar_step=ar_step,
            causal_block_size=causal_block_size, addnoise_condition=addnoise_condition,
            guidance_scale=guidance_scale, flow_shift=shift, num_inference_steps=steps, seed=seed, fps=fps,
            height=height, width=width, max_sequence_length=max_sequence_length, kv_cache=speedups,
            skip_unstarted_blocks=speedups, batch_guidance=speedups, teacache=teacache,
            teacache_threshold=teacache_threshold, teacache_retention_steps=teacache_retention)
        try:
            cfg = load_config(profile, list(overrides))
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        from tasks.generate.lib.generator import preflight

        try:
            preflight(checkpoint, gen, image, end_image, video)
        except (ValueError, FileNotFoundError) as exc:
            raise click.UsageError(str(exc)) from None
        from infra.runtime import prepare_environment

        prepare_environment(cfg)
        from flows.generate import generate as generate_flow

        try:
            stats = generate_flow(cfg, os.path.abspath(checkpoint), gen, out, image, end_image, video, frames_out)
        except (ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"{stats['frames']} frames written to {stats['out']} in {stats['seconds']:.1f}s "
                   f"({stats['sampler']}); MLflow run {stats['mlflow_run_id']}")
