"""``reelflow`` command line: run, corpus, inspect, config.

Prefect reads its settings at import time, so this module imports nothing heavy at the top:
the configuration is validated and the environment prepared before prefect/ray/mlflow load.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time

import click

# Prefect reads its settings when first imported (by the flows below): a loaded machine needs more than
# the 20 s default to start the ephemeral server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from infra.config import UNTIL_CHOICES, ConfigError, PipelineConfig, load_config

log = logging.getLogger("reelflow")


def _setup_logging(verbose: bool) -> None:
    from infra.runtime import quiet_libraries

    quiet_libraries(verbose)  # before Ray, Hugging Face or MLflow are imported: they read it at import
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("reelflow").setLevel(logging.INFO)  # progress lines are INFO; libraries stay at WARNING


def _load(profile: str, overrides: tuple[str, ...], **direct: str | None) -> PipelineConfig:
    items = list(overrides) + [f"{k}={v}" for k, v in direct.items() if v is not None]
    try:
        cfg = load_config(profile, items)
        from infra.runs import home_overrides

        home = home_overrides(cfg.storage.run_root, cfg.state_dir, items)  # $REELFLOW_HOME, when set
        return load_config(profile, home + items) if home else cfg
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


_profile = click.option("--profile", default="tiny", show_default=True, help="configs/profiles/<name>.yaml")
_set = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="config override")


@click.group()
@click.version_option(package_name="reelflow", prog_name="reelflow")
@click.option("-v", "--verbose", is_flag=True,
              help="info-level logs from every library, Ray worker output and Hugging Face progress bars")
def main(verbose: bool) -> None:
    """reelflow: the SkyReels-V2 training pipeline, from raw footage to long videos."""
    _setup_logging(verbose)


@main.command()
@_profile
@_set
@click.option("--input", "input_uri", help="folder or s3://bucket/prefix of videos (default: synthetic corpus)")
@click.option("--run-id", help="name the run; outputs go to {run_root}/{run_id}/ (default: from the config)")
@click.option("--until", type=click.Choice(UNTIL_CHOICES), help="stop after this stage")
@click.option("--replay", type=click.Choice(UNTIL_CHOICES), help="rerun this published stage on its inputs, then stop")
@click.option("--audit", "audit_mode", metavar="interactive|simulated|off|VERDICTS.json",
              help="how dataset gates are audited (default: audit.mode, interactive)")
def run(profile: str, overrides: tuple[str, ...], input_uri: str | None, run_id: str | None, until: str | None,
        replay: str | None, audit_mode: str | None):
    """Run the pipeline end to end; rerunning the same command skips finished stages."""
    direct: dict[str, str | None] = {"input": input_uri}
    if audit_mode in ("interactive", "simulated", "off"):
        direct["audit.mode"] = audit_mode
    elif audit_mode is not None:
        if not os.path.isfile(audit_mode):
            raise click.BadParameter(f"{audit_mode!r} is neither a mode nor a verdicts JSON file", param_hint="--audit")
        direct.update({"audit.mode": "file", "audit.verdicts_file": os.path.abspath(audit_mode)})
    cfg = _load(profile, overrides, **direct)
    if cfg.audit.mode == "simulated" and cfg.input:
        raise click.UsageError("--audit simulated draws verdicts from the synthetic corpus truth; it cannot "
                               "audit --input footage (use --audit interactive or --audit VERDICTS.json)")
    from flows.preflight import PreflightError, preflight

    try:  # input, model paths, endpoints, S3 credentials: bounded checks before any run folder exists
        preflight(cfg)
    except PreflightError as exc:
        raise click.UsageError(str(exc)) from None
    from infra.runtime import prepare_environment

    prepare_environment(cfg)
    from infra.session import default_run_id, validate_run_id

    run_id = run_id or default_run_id(cfg)
    try:
        validate_run_id(run_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--run-id") from None
    from flows.pipeline import pipeline

    if not logging.getLogger().isEnabledFor(logging.INFO):
        # Prefect repeats a failure's traceback for the task and each enclosing flow; the CLI reports it once.
        for name in ("prefect.task_runs", "prefect.flow_runs"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    started = time.time()
    from infra import storage
    from infra.runs import lock_held, record_end, record_start

    run_uri = storage.join(storage.normalize(cfg.storage.run_root), run_id)
    # What `reelflow runs` reads; a run another process holds keeps its own record (the lock refuses us).
    recording = not lock_held(run_uri)
    from infra.runlock import RunLockedError, release
    from infra.session import hold_run

    try:  # one writer per run: a second run with this id stops here, naming the holder
        hold_run(cfg, run_id)
    except RunLockedError as exc:
        raise click.ClickException(str(exc)) from None
    atexit.register(release, run_uri)
    if recording:
        record_start(run_uri, run_id, replay or until, cfg.profile, cfg.audit.mode)
    try:
        result = pipeline(cfg, run_id, until, replay)
    except BaseException as exc:  # the stage already logged its traceback; say what to do next
        if recording and type(exc).__name__ != "RunLockedError":
            record_end(run_uri, False, f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, Exception):
            raise
        raise click.ClickException(
            f"run {run_id} stopped: {type(exc).__name__}: {exc}\n"
            + ("Published stages are kept; continue with one of the commands above."  # a gate names its ways on
               if type(exc).__name__ == "AuditFailed" else
               "Published stages are kept; fix the cause and rerun the same command to resume.")
        ) from None
    if recording:
        record_end(run_uri, True)
    _print_where(cfg, run_id, result, time.time() - started)
    if cfg.audit.mode == "simulated":
        click.echo(f"  audits  : SIMULATED from the corpus truth. A real audit: reelflow run --audit interactive "
                   f"--run-id {run_id}, then reelflow audit serve {run_id}")


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
@click.option("--why", "why_clip", metavar="CLIP_ID", help="one line: why this clip is (not) in the dataset STAGE "
              "(exit status 1 when no clip matches)")
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout, for scripts")
@_profile
@_set
def inspect(run_id: str, stage: str | None, rows: int, why_clip: str | None, as_json: bool, profile: str,
            overrides: tuple[str, ...]) -> None:
    """Show a run's stages, or one stage's summary, error rows and sample rows."""
    import json

    from infra.inspect import describe_run, describe_stage, run_info, stage_info

    cfg = _load(profile, overrides)
    if why_clip and not stage:
        raise click.UsageError("--why needs a dataset: reelflow inspect RUN D_540p --why CLIP_ID")
    try:
        if why_clip:
            from infra.inspect import stage_manifest
            from tasks.curate.datasets import why_in_run

            stage_manifest(cfg, run_id, stage)  # an unknown stage lists the run's stages
            info = why_in_run(cfg, run_id, stage, why_clip)
            click.echo(json.dumps(info) if as_json else info["line"])
            if info["status"] in ("unknown", "ambiguous"):
                sys.exit(1)
            return
        if as_json:
            info = stage_info(cfg, run_id, stage, rows) if stage else run_info(cfg, run_id)
            click.echo(json.dumps(info, indent=1, default=str))
            return
        text = describe_stage(cfg, run_id, stage, rows) if stage else describe_run(cfg, run_id)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(text)


@main.command("runs")
@click.option("--json", "as_json", is_flag=True, help="one JSON document on stdout, for scripts")
@_profile
@_set
def runs_cmd(as_json: bool, profile: str, overrides: tuple[str, ...]) -> None:
    """List the runs under the run root: status, stages done, time (newest first)."""
    import json

    from infra.runs import format_runs, list_runs

    cfg = _load(profile, overrides)
    found = list_runs(cfg.storage.run_root)
    click.echo(json.dumps(found, indent=1) if as_json else format_runs(found, cfg.storage.run_root))


@main.group("audit")
def audit_group() -> None:
    """Human-in-the-loop bad-case audits (report section 3.1)."""


@audit_group.command("serve")
@click.argument("run_id")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@_profile
@_set
def audit_serve(run_id: str, host: str, port: int, profile: str, overrides: tuple[str, ...]) -> None:
    """Serve the audit web page for a run's pending gates."""
    from infra.audit_app import serve_run

    cfg = _load(profile, overrides)
    try:
        serve_run(cfg.storage.run_root, run_id, host, port, echo=click.echo)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@audit_group.command("status")
@click.argument("run_id")
@_profile
@_set
def audit_status(run_id: str, profile: str, overrides: tuple[str, ...]) -> None:
    """List a run's gates: verdict counts, thresholds, tolerated reasons and outcomes."""
    from infra import storage
    from infra.audit_view import status_lines

    cfg = _load(profile, overrides)
    run_uri = storage.join(storage.normalize(cfg.storage.run_root), run_id)
    if not storage.exists(run_uri):
        raise click.ClickException(f"no run {run_id!r} under {cfg.storage.run_root} (set storage.run_root)")
    click.echo("\n".join(status_lines(run_uri, cfg.audit)))


@main.command("train-expert")
@click.option("--expert", type=click.Choice(["shot"]), default="shot", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder for the trained expert")
@click.option("--labelled", type=click.Path(dir_okay=False, exists=True),
              help="JSONL of {clip_uri, shot_type?, shot_angle?, shot_position?}; default: synthetic labelled frames")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--seed", default=0, show_default=True, type=int)
def train_expert_cmd(expert: str, out: str, labelled: str | None, epochs: int, seed: int) -> None:
    """Train a captioning sub-expert (shot type / angle / position heads) and report held-out accuracy."""
    from tasks.curate.lib.train_expert import train_expert

    metrics = train_expert(expert, out, labelled, epochs=epochs, seed=seed)
    click.echo(f"{expert} expert written to {os.path.abspath(out)}: {metrics}")


@main.command("config")
@_profile
@_set
def show_config(profile: str, overrides: tuple[str, ...]) -> None:
    """Print the resolved configuration (defaults <- profile <- --set)."""
    import yaml

    click.echo(yaml.safe_dump(_load(profile, overrides).model_dump(mode="json"), sort_keys=False))


from flows.cli_generate import register  # noqa: E402  (generate + init-checkpoint commands)

register(main)

if __name__ == "__main__":
    sys.exit(main())
