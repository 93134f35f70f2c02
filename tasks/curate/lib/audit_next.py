"""What to type next when an audit gate fails: the rerun that continues the same run.

A failed gate stops the run with its published stages kept. The way forward is a rerun of the same
command with the same run id and one decision changed: a looser threshold for this gate (a human
decision, recorded in the gate's sample), human or supplied verdicts instead of simulated ones, or no
audit at all. The audit settings are not part of the run id (``infra.session.default_run_id``), so
each of these resumes the run instead of starting a new one.
"""

from __future__ import annotations

import math
import os
import shlex
import sys


def _invocation() -> list[str] | None:
    """The `reelflow run ...` arguments of this process, if it is one (the CLI runs flows in-process)."""
    argv = list(sys.argv)
    if not argv or os.path.basename(argv[0]) not in ("reelflow", "cli.py") or "run" not in argv[1:]:
        return None
    return argv[argv.index("run") + 1:]


def _options(args: list[str]) -> list[tuple[str, list[str]]]:
    """``args`` as (option name, its tokens); flags without a value (-v) keep one token."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        takes_value = name.startswith("--") and "=" not in arg and i + 1 < len(args) and not args[i + 1].startswith("--")
        out.append((name, args[i:i + 2] if takes_value else [arg]))
        i += 2 if takes_value else 1
    return out


def _value(tokens: list[str]) -> str:
    return tokens[0].split("=", 1)[1] if "=" in tokens[0] else (tokens[1] if len(tokens) > 1 else "")


def rerun(run_id: str, profile: str, *extra: str, drop_set: str = "\0") -> str:
    """The command that resumes ``run_id`` with ``extra`` options: the same `reelflow run` arguments,
    without --run-id, without any option that ``extra`` sets again and any ``--set`` starting with
    ``drop_set``; outside the CLI, the profile's plain form."""
    args = _invocation()
    if args is None:
        base = ["--profile", profile]
    else:
        replaced = {"--run-id", *(e for e in extra if e.startswith("--") and e != "--set")}
        base = [t for name, tokens in _options(args) if name not in replaced
                and not (name == "--set" and _value(tokens).startswith(drop_set)) for t in tokens]
    return shlex.join(["reelflow", "run", *base, "--run-id", run_id, *extra])


def where(run_id: str, profile: str, command: str) -> str:
    """``reelflow audit COMMAND RUN`` with the run's --profile and --set options (they locate the run root)."""
    args = _invocation()
    keep = ["--profile", profile] if args is None else \
        [t for name, tokens in _options(args) if name in ("--profile", "--set") for t in tokens]
    return shlex.join(["reelflow", "audit", command, run_id, *keep])


def looser_threshold(bad_rate: float) -> float:
    """The smallest whole percent that the observed rate is below (a suggestion, not a default)."""
    return min(1.0, (math.floor(round(bad_rate * 100, 6)) + 1) / 100)


def ways_forward(run_id: str, profile: str, gate: str, bad_rate: float) -> list[str]:
    key = f"audit.gates.{gate}.max_bad_rate"
    loose = looser_threshold(bad_rate)
    return [
        "To continue this run (published stages are kept; the audit settings are not part of the run id):",
        f"  accept up to {100 * loose:g}% bad cases at {gate}:  "
        + rerun(run_id, profile, "--set", f"{key}={loose:g}", drop_set=key + "="),
        f"  have reviewers label the sample:  {where(run_id, profile, 'serve')}   then  "
        + rerun(run_id, profile, "--audit", "interactive"),
        "  use verdicts you supply:  " + rerun(run_id, profile, "--audit", "VERDICTS.json"),
        "  skip the audits:  " + rerun(run_id, profile, "--audit", "off"),
        "  every gate's counts and thresholds:  " + where(run_id, profile, "status"),
    ]
