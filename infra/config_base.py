"""What every configuration module shares: the strict base model, the user-facing error, YAML loading.

The per-area config modules (caption, datasets, filters, post, train) and ``infra.config``, which
assembles them into ``PipelineConfig``, all import from here, so none of them imports another to get
these: the modules form a tree, not a circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration problem, already phrased for the user."""


class Cfg(BaseModel):
    # extra="forbid": a typo in YAML or --set must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _allowed(model: type[BaseModel], loc: tuple) -> str:
    """Describe the allowed keys at ``loc`` for an 'extra field' error."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return ""
        current = field.annotation
    fields = getattr(current, "model_fields", None)
    return f"; allowed keys: {', '.join(sorted(fields))}" if fields else ""


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = tuple(e["loc"])
        dotted = ".".join(str(p) for p in loc) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field" + _allowed(model, loc)
        else:
            msg = f"got {e.get('input')!r}; {msg}"
        lines.append(f"  {dotted}: {msg}")
    return "\n".join(lines)

