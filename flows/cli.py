"""``reelflow`` command line: run, corpus, inspect, config.

Prefect reads its settings at import time, so this module imports nothing heavy at the top:
the configuration is validated and the environment prepared before prefect/ray/mlflow load.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import click

from infra.config import STAGE_ORDER, ConfigError, PipelineConfig, load_config

log = logging.getLogger("reelflow")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("reelflow").setLevel(logging.INFO)


def _load(profile: str, overrides: tuple[str, ...], **direct: str | None) -> PipelineConfig:
    items = list(overrides) + [f"{k}={v}" for k, v in direct.items() if v is not None]
    try:
        return load_config(profile, items)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


_profile = click.option("--profile", default="tiny", show_default=True, help="configs/profiles/<name>.yaml")
_set = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="config override")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="info-level logs from every library")
def main(verbose: bool) -> None:
    """reelflow: the SkyReels-V2 training pipeline, from raw footage to long videos."""
    _setup_logging(verbose)


@main.command()
@_profile
@_set
@click.option("--input", "input_uri", help="folder or s3://bucket/prefix of videos (default: synthetic corpus)")
@click.option("--run-id", help="name the run; outputs go to {run_root}/{run_id}/ (default: from the config)")
@click.option("--until", type=click.Choice(STAGE_ORDER), help="stop after this stage")
def run(profile: str, overrides: tuple[str, ...], input_uri: str | None, run_id: str | None, until: str | None):
    """Run the pipeline end to end; rerunning the same command skips finished stages."""
    cfg = _load(profile, overrides, input=input_uri)
    from infra.runtime import prepare_environment

    prepare_environment(cfg)
    from infra.session import default_run_id, validate_run_id

    run_id = run_id or default_run_id(cfg)
    try:
        validate_run_id(run_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--run-id") from None
    from flows.pipeline import pipeline

    started = time.time()
    result = pipeline(cfg, run_id, until)
    _print_where(cfg, run_id, result, time.time() - started)


def _print_where(cfg: PipelineConfig, run_id: str, result, seconds: float) -> None:
    from infra.tracking import default_tracking_uri

    tracking = cfg.tracking.mlflow_uri or default_tracking_uri(cfg.storage.run_root, cfg.state_dir)[0]
    click.echo(
        f"\nrun {run_id} finished in {seconds:.0f}s: last stage {result.stage!r}, "
        f"{result.row_count} rows ({result.error_count} with errors)\n"
        f"  outputs : {os.path.dirname(result.uri)}\n"
        f"  inspect : reelflow inspect {run_id} {result.stage}\n"
        f"  MLflow  : {tracking}  (make ui -> http://127.0.0.1:5000)\n"
        f"  Prefect : {os.environ.get('PREFECT_API_URL') or 'ephemeral; make ui -> http://127.0.0.1:4200'}"
    )


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--videos", default=6, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--seed", default=0, show_default=True, type=int)
@_profile
@_set
def corpus(out: str, videos: int, seed: int, profile: str, overrides: tuple[str, ...]) -> None:
    """Generate a synthetic film corpus (mp4 + ground-truth JSON per film)."""
    cfg = _load(profile, overrides, **{"corpus.videos": str(videos), "corpus.seed": str(seed)})
    from tasks.corpus import generate_corpus

    paths = generate_corpus(out, cfg.corpus)
    click.echo(f"{len(paths)} films written to {os.path.abspath(out)}")


@main.command()
@click.argument("run_id")
@click.argument("stage", required=False)
@click.option("--rows", default=5, show_default=True, help="sample rows to show")
@_profile
@_set
def inspect(run_id: str, stage: str | None, rows: int, profile: str, overrides: tuple[str, ...]) -> None:
    """Show a run's stages, or one stage's summary, error rows and sample rows."""
    from infra.inspect import describe_run, describe_stage

    cfg = _load(profile, overrides)
    try:
        text = describe_stage(cfg, run_id, stage, rows) if stage else describe_run(cfg, run_id)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(text)


@main.command("config")
@_profile
@_set
def show_config(profile: str, overrides: tuple[str, ...]) -> None:
    """Print the resolved configuration (defaults <- profile <- --set)."""
    import yaml

    click.echo(yaml.safe_dump(_load(profile, overrides).model_dump(mode="json"), sort_keys=False))


if __name__ == "__main__":
    sys.exit(main())
