"""What every configuration module shares: the strict base model, the user-facing error, YAML loading.

The per-area config modules (caption, datasets, filters, post, train) and ``infra.config``, which
assembles them into ``PipelineConfig``, all import from here, so none of them imports another to get
these: the modules form a tree, not a circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """A configuration problem, already phrased for the user."""


class Cfg(BaseModel):
    # extra="forbid": a typo in YAML or --set must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageResources(BaseModel):
    """What one worker of a stage reserves on the Ray cluster: each stage's config declares it as
    ``resources`` (its default is the stage's need; a GPU profile raises ``num_gpus`` for the model stages).
    Ray places the stage's actors on nodes that have them and sets their CUDA_VISIBLE_DEVICES."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    actors: int | None = Field(None, ge=1, description="Actor pool size; None = as many as the cluster's CPUs "
                               "(and GPUs) fit, at most one per item")
    num_cpus: float | None = Field(None, gt=0, description="CPUs per actor; None = 1")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per actor; None = 0 (training: one each when the "
                                   "cluster has GPUs)")
    memory_gb: float | None = Field(None, gt=0, description="Heap memory reserved per actor (Ray schedules on it)")
    custom: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources per actor")

    def wants_gpu(self) -> bool:
        return bool(self.num_gpus)


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

