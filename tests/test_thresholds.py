"""Filter thresholds are stated once: each filter's own decision bound lives in configs/filters/detect.yaml,
the profiles reference it as `detect`, and the benchmark and code defaults read it from there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from infra.config_base import ConfigError, load_yaml
from infra.config_datasets import FILTERS_DIR, load_profile
from infra.config_detect import load_detectors
from tasks.curate.filters import default_thresholds, rejects

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_thresholds_are_the_yaml_bounds_the_results_were_measured_at():
    recorded = json.loads((ROOT / "benchmarks/results/filters.json").read_text())["thresholds"]
    assert json.dumps(default_thresholds()) == json.dumps(recorded)  # same keys, order and numbers
    assert rejects({"score_border": 0.05}, default_thresholds()["border"])  # bars present at 5% of the frame


def test_profiles_reference_the_detector_bounds_instead_of_repeating_them():
    detectors = load_detectors(FILTERS_DIR)
    bounds = {(e["column"], side): e[side] for e in detectors.values() for side in ("min", "max")
              if e.get(side) is not None}
    repeated = []
    for path in sorted(FILTERS_DIR.glob("*.yaml")):
        for rule in load_yaml(path).get("rules", []) if path.stem not in ("columns", "detect") else []:
            side = "min" if rule["op"].startswith(">") else "max"
            for value in (rule["value"], *rule.get("by_profile", {}).values()):
                if value != "detect" and value == bounds.get((rule["column"], side)):
                    repeated.append(f"{path.name}:{rule['name']}={value}")
    assert repeated == []
    strict = {r.name: r for r in load_profile("540p").rules}
    assert strict["text"].value == detectors["text"]["max"] and strict["short"].threshold("tiny") == 1.0
    assert strict["border"].value == 0.35 != detectors["border"]["max"]  # crop loss, not bars present


def test_detect_without_a_bound_names_the_rule(tmp_path):
    for name in ("detect.yaml", "columns.yaml"):
        shutil.copy(FILTERS_DIR / name, tmp_path / name)
    (tmp_path / "odd.yaml").write_text('rules:\n  - {name: subs, column: score_subtitle, op: "<=", value: detect}\n')
    with pytest.raises(ConfigError, match="rule 'subs' says `detect`.*score_subtitle"):
        load_profile("odd", tmp_path)
