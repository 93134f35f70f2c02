"""The README's commands run as written.

Every ``reelflow`` line of the README's bash blocks is parsed by the real CLI (options, choices, the
configuration its ``--set``/``--profile`` give); the cheap ones (inspect on a small finished run, config,
runs, --help, --version) are run in a subprocess from an unrelated directory with ``REELFLOW_HOME``
pointing at the run store, and must exit 0 with the output a person expects. Long ones (run,
train-expert, audit serve) are parsed, not run: the end-to-end tests run the pipeline.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from synthetic_pool import publish, scored_pool, stage_ctx

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
RUN_ID = "readme"
CHEAP = ("inspect", "config", "runs", "--help", "--version")


def readme_commands() -> list[str]:
    """``reelflow ...`` lines of the README's bash blocks (continuations joined, comments dropped)."""
    text = open(README, encoding="utf-8").read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["reelflow"]:
                commands.append(" ".join(shlex.quote(w) for w in words))
    return commands


COMMANDS = readme_commands()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A small finished run under ``$REELFLOW_HOME/runs``: a clip table with an error row and a dataset view."""
    from infra import manifest as mf
    from infra.config import load_config
    from infra.config_datasets import DatasetsConfig
    from infra.runs import record_end, record_start
    from tasks.curate import datasets

    root = tmp_path_factory.mktemp("home")
    cfg = load_config("tiny", [f"storage.run_root={root / 'runs'}", f"state_dir={root / '.reelflow'}"])
    ctx = stage_ctx(cfg, root, RUN_ID)
    pool = scored_pool(60)
    pool.loc[3, "error"] = "film_0001.mp4: truncated file"
    publish(ctx, pool, "clips")
    record_start(ctx.run_uri, RUN_ID, "D_540p", "tiny", "simulated")
    view = datasets.build_dataset(ctx, DatasetsConfig(), "D_540p", publish(ctx, pool, "score"))
    record_end(ctx.run_uri, True)
    assert view.row_count == 60
    clip_id = str(pool.clip_id[0])
    kept = bool(mf.read_table(view).set_index("clip_id").loc[clip_id, "in_D_540p"])
    return root, clip_id, kept


def _cli(args: list[str], home_dir, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "REELFLOW_HOME": str(home_dir)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _args(command: str, clip_id: str) -> list[str]:
    return shlex.split(command.replace("'<run_id>'", RUN_ID).replace("'<clip_id>'", clip_id)
                       .replace("<run_id>", RUN_ID).replace("<clip_id>", clip_id))[1:]


def test_readme_has_the_everyday_commands():
    names = {shlex.split(c)[1] for c in COMMANDS}
    assert {"run", "inspect", "runs", "config", "corpus", "--version"} <= names, names


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command, home, monkeypatch):
    """Options, choices and the resolved configuration of every README line are valid."""
    import click

    from flows import cli

    root, clip_id, *_ = home
    monkeypatch.setenv("REELFLOW_HOME", str(root))
    args = _args(command, clip_id)
    if args[0].startswith("-") and args[0] not in ("-v", "--verbose"):
        return  # --help / --version: run below
    args = [a for a in args if a not in ("-v", "--verbose")]
    parent = click.Context(cli.main, info_name="reelflow")
    sub = cli.main.get_command(parent, args[0])
    assert sub is not None, f"README names an unknown command: {command}"
    rest = args[1:]
    while isinstance(sub, click.Group):  # e.g. `audit serve`
        parent = click.Context(sub, info_name=args[0], parent=parent)
        sub, rest = sub.get_command(parent, rest[0]), rest[1:]
        assert sub is not None, f"README names an unknown command: {command}"
    ctx = sub.make_context(args[0], list(rest), parent=parent)  # raises on a bad option or choice
    params = ctx.params
    if "overrides" in params and "profile" in params:
        cfg = cli._load(params["profile"], params["overrides"])
        if params["profile"] == "tiny" and "--input" not in args:  # profiles may name their own run root
            assert cfg.storage.run_root == str(root / "runs")  # found from REELFLOW_HOME, not the cwd


@pytest.mark.parametrize("command", [c for c in COMMANDS if shlex.split(c)[1] in CHEAP])
def test_readme_cheap_command_runs(command, home, tmp_path):
    root, clip_id, kept = home
    result = _cli(_args(command, clip_id), root, tmp_path)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    out = result.stdout
    words = shlex.split(command)
    if words[1] == "inspect" and "--why" in words:
        assert out.startswith(f"clip {clip_id} is {'in' if kept else 'not in'} D_540p") and out.count("\n") == 1
    elif words[1] == "inspect":
        assert RUN_ID in out
        if "--json" in words and len(words) == 3:
            assert [s["stage"] for s in json.loads(out)["stages"]] == ["clips", "score", "D_540p"]
        elif len(words) > 3 and words[3] == "clips" and "--json" in words:
            doc = json.loads(out)
            assert doc["rows"] == 60 and doc["errors"] == 1 and "truncated" in doc["error_rows"][0]["error"]
        elif len(words) > 3 and words[3] == "clips":
            assert "error rows (1)" in out and "truncated file" in out
        else:
            assert "clips" in out and "D_540p" in out
    elif words[1] == "runs":
        assert re.search(rf"^{RUN_ID}\s+finished\s+3\s+D_540p", out, flags=re.M), out
    elif words[1] == "--version":
        assert re.match(r"reelflow, version \d+\.\d+", out)
    elif words[1] == "config":
        assert "run_root" in out


def test_cli_habits(home, tmp_path):
    """Unknown clip and unknown stage fail with a non-zero status and say what exists."""
    root, clip_id, *_ = home
    unknown = _cli(["inspect", RUN_ID, "D_540p", "--why", "nosuchclip"], root, tmp_path)
    assert unknown.returncode == 1 and "no such clip_id" in unknown.stdout
    why = _cli(["inspect", RUN_ID, "D_540p", "--why", clip_id, "--json"], root, tmp_path)
    doc = json.loads(why.stdout)
    assert why.returncode == 0 and doc["clip_id"] == clip_id and doc["status"] in ("in", "out")
    stage = _cli(["inspect", RUN_ID, "D_54Op"], root, tmp_path)
    assert stage.returncode != 0 and "its stages: clips, score, D_540p" in stage.stderr
    runs = json.loads(_cli(["runs", "--json"], root, tmp_path).stdout)
    assert [r["run_id"] for r in runs] == [RUN_ID] and runs[0]["stages_done"] == 3
    missing = _cli(["inspect", "nosuchrun"], root, tmp_path)
    assert missing.returncode != 0 and "reelflow runs" in missing.stderr


@pytest.mark.slow
def test_readme_corpus_command_runs(tmp_path):
    """The corpus line as written, except that its output folder is this test's (not a shared /tmp path)."""
    command = next(c for c in COMMANDS if shlex.split(c)[1] == "corpus")
    out = tmp_path / "films"
    args = [str(out) if a.startswith("/tmp/") else a for a in shlex.split(command)[1:]]
    result = _cli(args, tmp_path, tmp_path)
    assert result.returncode == 0, result.stderr
    videos = int(args[args.index("--videos") + 1])
    assert len(list(out.glob("*.mp4"))) == videos and len(list(out.glob("*.truth.json"))) == videos
