"""Each filter's own decision bound, stated once in ``configs/filters/detect.yaml``.

The benchmark of the filters measures precision / recall at these bounds, and a threshold profile rule
that sits at one writes ``value: detect`` (or ``by_profile: {tiny: detect}``): :func:`resolve_detect`
puts the number in when the profile is loaded, so no number is written twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.config_base import ConfigError, load_yaml

DETECT = "detect"


def load_detectors(filters_dir: Path) -> dict[str, dict]:
    """Filter name -> {column (expected name), min and/or max}, in the file's order."""
    path = filters_dir / "detect.yaml"
    data = load_yaml(path)
    for name, entry in data.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("column"), str) and set(entry) - {"column"}
                and set(entry) <= {"column", "min", "max"}):
            raise ConfigError(f"{path}: {name}: expected {{column: <name>, min: <bound>, max: <bound>}}, got {entry!r}")
    return data


def _bound(rule: dict, detectors: dict[str, dict], where: str) -> float:
    side = "min" if str(rule.get("op", "")).startswith(">") else "max"
    for entry in detectors.values():
        if entry["column"] == rule.get("column") and entry.get(side) is not None:
            return float(entry[side])
    raise ConfigError(f"{where}: rule {rule.get('name')!r} says `{DETECT}` but configs/filters/detect.yaml has no "
                      f"{side} bound for column {rule.get('column')!r}; write the number or add the filter there")


def resolve_detect(rules: list[Any], filters_dir: Path, where: str) -> list[Any]:
    """Rules (raw YAML mappings) with every ``detect`` value replaced by the filter's own bound."""
    detectors: dict[str, dict] | None = None
    out = []
    for rule in rules:
        if isinstance(rule, dict) and DETECT in (rule.get("value"), *dict(rule.get("by_profile") or {}).values()):
            detectors = detectors if detectors is not None else load_detectors(filters_dir)
            bound = _bound(rule, detectors, where)
            rule = {**rule, **({"value": bound} if rule.get("value") == DETECT else {})}
            if rule.get("by_profile"):
                rule["by_profile"] = {k: bound if v == DETECT else v for k, v in rule["by_profile"].items()}
        out.append(rule)
    return out
