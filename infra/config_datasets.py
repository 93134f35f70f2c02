"""Configuration of datasets, concept balancing and the human audit (report section 3.1).

A dataset is a VIEW: the scored pool (or another dataset) plus a threshold profile from
``configs/filters/<profile>.yaml`` (report section 3.1: ``D_256p = pool.filter(loose)`` ...).
Profiles name the *expected* score columns (``score_black`` ...); ``configs/filters/columns.yaml``
maps those to what the score stage actually writes, so renaming a score column is a config edit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from infra.config_base import Cfg as _Cfg
from infra.config_base import ConfigError, StageResources, format_validation_error, load_yaml
from infra.config_detect import resolve_detect

FILTERS_DIR = Path(__file__).resolve().parent.parent / "configs" / "filters"
Op = Literal["<", "<=", ">", ">="]
REASONS = ("black", "static", "text", "mosaic", "effects/stickers", "low quality", "wrong caption", "other")


class Rule(_Cfg):
    """A clip is kept only if ``column op value`` holds; otherwise ``name`` joins its ``rejected_by``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Short rule name shown in rejected_by")
    column: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Expected score column (see columns.yaml)")
    op: Op = Field(description="Comparison the clip's score must satisfy to be kept")
    value: float = Field(description="Threshold")
    by_profile: dict[str, float] = Field(
        default_factory=dict, description="Threshold per pipeline profile (tiny, wan-14b) overriding value"
    )

    off_in: list[str] = Field(
        default_factory=list, description="Pipeline profiles where the rule does not apply (tiny: random aesthetic head)")
    videos_only: bool = Field(
        False, description="The rule reads time (duration, motion, freezes): image samples (media=image, the "
        "report's joint image+video stages) are not judged by it")

    def threshold(self, pipeline_profile: str) -> float:
        return self.by_profile.get(pipeline_profile, self.value)

    def stricter_or_equal(self, other: Rule) -> bool:
        """True when this rule keeps a subset of what ``other`` keeps (same column, same direction)."""
        if self.column != other.column or self.op[0] != other.op[0] or not set(self.off_in) <= set(other.off_in):
            return False
        lower_bound = self.op[0] == ">"  # ">= v": a larger v keeps fewer clips
        pairs = [(self.value, other.value)] + [
            (self.by_profile.get(p, self.value), other.by_profile.get(p, other.value))
            for p in {*self.by_profile, *other.by_profile}
        ]
        return all((a >= b) if lower_bound else (a <= b) for a, b in pairs)


class ThresholdProfile(_Cfg):
    """Rules over score columns; ``extends`` inherits a looser profile's rules (by name, tighten only)."""

    name: str
    description: str = ""
    extends: str | None = Field(None, description="Profile whose rules are inherited")
    rules: list[Rule] = Field(default_factory=list)
    crop_borders: bool = Field(False, description="Strict profile: clips are cut inside the border crop box")
    missing: Literal["pass", "reject"] = Field(
        "pass", description="A null score (filter disabled for the run): pass the rule, or reject the clip")

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[Rule]) -> list[Rule]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique, repeated: {', '.join(dupes)}")
        return rules


def load_profile(name: str, filters_dir: Path = FILTERS_DIR) -> ThresholdProfile:
    """``<filters_dir>/<name>.yaml`` with its ``extends`` chain resolved into one flat rule list.

    The report's progression is loose -> medium -> strict: an inherited rule may be tightened,
    never loosened, so ``D_540p`` is always a subset of ``D_360p`` of ``D_256p``.
    """
    chain: list[ThresholdProfile] = []
    while name is not None:
        path = filters_dir / f"{name}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in filters_dir.glob("*.yaml") if p.stem not in ("columns", "detect"))
            raise ConfigError(f"threshold profile {name!r} not found ({path}); known: {', '.join(known)}")
        if name in [p.name for p in chain]:
            raise ConfigError(f"threshold profile {name!r} extends itself (chain: {[p.name for p in chain]})")
        raw = load_yaml(path)
        if isinstance(raw.get("rules"), list):  # `value: detect`: the filter's own bound (detect.yaml)
            raw["rules"] = resolve_detect(raw["rules"], filters_dir, str(path))
        try:
            chain.append(ThresholdProfile.model_validate({"name": name, **raw}))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, ThresholdProfile, str(path))) from None
        name = chain[-1].extends
    rules: dict[str, Rule] = {}
    for profile in reversed(chain):  # loosest first
        for rule in profile.rules:
            base = rules.get(rule.name)
            if base is not None and not rule.stricter_or_equal(base):
                raise ConfigError(
                    f"profile {profile.name!r} loosens inherited rule {rule.name!r} "
                    f"({base.column} {base.op} {base.value} -> {rule.column} {rule.op} {rule.value}); "
                    "a profile that extends another may only tighten it"
                )
            rules[rule.name] = rule
    top = chain[0]
    return ThresholdProfile(name=top.name, description=top.description, extends=top.extends,
                            rules=list(rules.values()), crop_borders=any(p.crop_borders for p in chain),
                            missing="reject" if any(p.missing == "reject" for p in chain) else "pass")


def load_columns(filters_dir: Path = FILTERS_DIR) -> dict[str, str]:
    """Expected score column -> column the score stage writes (``columns.yaml``)."""
    data = load_yaml(filters_dir / "columns.yaml")
    bad = {k: v for k, v in data.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:
        raise ConfigError(f"{filters_dir / 'columns.yaml'}: expected name: column pairs, got {bad}")
    return data


class DatasetSpec(_Cfg):
    name: str = Field(pattern=r"^D_[A-Za-z0-9_]+$", description="Dataset (and stage folder) name")
    profile: str = Field(description="Threshold profile: configs/filters/<profile>.yaml")
    base: str | None = Field(None, description="Dataset this one filters; None = the whole scored pool")
    manual: bool = Field(
        False, description="ManualFilter (report 3.1, D_720p_sft): reviewers label every clip of base; their verdicts "
        "fill the column manual_good (1 Good, 0 Bad) that the profile's rules read")

    @model_validator(mode="after")
    def _manual_needs_base(self) -> DatasetSpec:
        if self.manual and self.base is None:
            raise ValueError(f"dataset {self.name}: a manual filter reviews a base dataset; set base")
        return self


class DatasetsConfig(_Cfg):
    """Which datasets a run builds; the report's D_256p / D_360p / D_540p / D_540p_sft / D_720p_sft."""

    specs: list[DatasetSpec] = Field(
        default_factory=lambda: [
            DatasetSpec(name="D_256p", profile="256p"),
            DatasetSpec(name="D_360p", profile="360p"),
            DatasetSpec(name="D_540p", profile="540p"),
            DatasetSpec(name="D_540p_sft", profile="post", base="D_post"),
            DatasetSpec(name="D_720p_sft", profile="manual", base="D_540p_sft", manual=True),
        ]
    )
    columns: dict[str, str] = Field(default_factory=dict, description="Overrides of columns.yaml")


class DatasetStageConfig(_Cfg):
    """What one dataset stage hashes for resume: the RESOLVED rules, so a YAML edit re-runs it."""

    dataset: str
    base: str | None
    pipeline_profile: str
    profile: ThresholdProfile
    columns: dict[str, str]
    review: str | None = Field(None, description="Manual filter: the review's audit id in the run's store")
    review_digest: str | None = Field(None, description="Hash of the review's verdicts: new verdicts re-run the stage")


def dataset_stage_config(spec: DatasetSpec, cfg: DatasetsConfig, pipeline_profile: str,
                         filters_dir: Path = FILTERS_DIR) -> DatasetStageConfig:
    columns = {**load_columns(filters_dir), **cfg.columns}
    return DatasetStageConfig(dataset=spec.name, base=spec.base, pipeline_profile=pipeline_profile,
                              profile=load_profile(spec.profile, filters_dir), columns=columns)


# --- concept balancing -----------------------------------------------------------------------

# Report Figure 5, after balancing: Human 55.3%, Scenery 14.0%, Animal 8.5%, Architecture 4.6%;
# the other 17.6% (classes the report does not name) is shared by our remaining two categories.
REPORT_TARGET = {"human": 0.553, "scenery": 0.14, "animal": 0.085, "architecture": 0.046,
                 "vehicle": 0.088, "object": 0.088}


class ZeroShotConfig(_Cfg):
    """CLIP-style zero-shot subject classifier for clips without a caption category."""

    model_path: str | None = Field(None, description="transformers CLIPModel folder; None = tiny random (tiny profile)")
    prompt: str = Field("a film still of a {}", description="Text prompt per category ({} = category)")
    frames: int = Field(3, ge=1, le=16, description="Frames per clip whose embeddings are averaged")
    cache_dir: str = Field(".reelflow/models", description="Where the tiny random model is built once")


class BalanceConfig(_Cfg):
    """Stage ``D_post``: concept balance of D_540p (report: Human 84.8% -> 55.3%, total -50%)."""

    source: str = Field("D_540p", description="Dataset that is balanced")
    target: dict[str, float] = Field(default_factory=lambda: dict(REPORT_TARGET),
                                     description="Share of each category after balancing (normalised)")
    keep_fraction: float = Field(0.5, gt=0, le=1, description="Samples after / clips before (report: about 0.5)")
    # The report's after-shares need the classes it does not name to grow from 2.3% of the pool
    # to 22.2% of a half-size set (0.222 * 0.5 / 0.023 = 4.83x each with REPORT_BEFORE's proportional
    # split): 5 leaves the water-filling room (models/balance.py).
    max_repeat: int = Field(
        5, ge=1, le=100,
        description="Most times a rare clip may be repeated; 1 = pure subsampling (see models/balance.py)")
    category_column: str = Field("category", description="Caption column holding the subject category")
    seed: int = 0
    classifier: ZeroShotConfig = ZeroShotConfig()
    resources: StageResources = Field(default_factory=StageResources, description="Ray resources per classifier actor")

    @field_validator("target")
    @classmethod
    def _shares(cls, target: dict[str, float]) -> dict[str, float]:
        if not target or any(not (v > 0 and math.isfinite(v)) for v in target.values()):
            raise ValueError(f"target must map categories to positive shares, got {target}")
        return target


# --- human-in-the-loop audit -----------------------------------------------------------------


class GateConfig(_Cfg):
    """One audit gate: sample a dataset, have humans label it, pass when the bad-case rate is low."""

    dataset: str = Field(description="Dataset audited at this gate")
    kind: Literal["pretrain", "posttrain"] = "pretrain"
    sample_rate: float | None = Field(None, gt=0, le=1, description="None = the kind's report rate")
    max_bad_rate: float | None = Field(None, gt=0, le=1, description="Pass when bad/total is BELOW this")
    tolerate: list[str] = Field(
        default_factory=list, description="Reasons this dataset's profile deliberately lets through (e.g. text in "
        "D_256p): recorded and reported, not counted as bad at this gate")

    @field_validator("tolerate")
    @classmethod
    def _reasons(cls, reasons: list[str]) -> list[str]:
        unknown = sorted(set(reasons) - set(REASONS))
        if unknown:
            raise ValueError(f"unknown reasons {unknown}; allowed: {', '.join(REASONS)}")
        return reasons


REPORT_GATES = {"pretrain": (0.0001, 0.15), "posttrain": (0.001, 0.03)}  # report Figure 3: rate, bad-case


class AuditConfig(_Cfg):
    mode: Literal["interactive", "file", "simulated", "off"] = Field(
        "interactive", description="interactive: web page + wait; file: --audit verdicts.json; "
        "simulated: verdicts from the synthetic corpus truth (labelled simulated)")
    verdicts_file: str | None = Field(None, description="JSON verdicts for mode=file")
    min_sample: int = Field(20, ge=1, description="At least this many clips per gate (small runs still audit)")
    max_sample: int = Field(500, ge=1, description="At most this many clips per gate")
    seed: int = 0
    poll_s: float = Field(2.0, gt=0, le=600, description="How often a waiting gate re-reads the verdicts")
    wait_timeout_s: float | None = Field(None, gt=0, description="Give up waiting (rerun resumes); None = forever")
    # Each gate audits against what its profile promises: the loose profiles keep text and low
    # quality on purpose (report 3.1: OCR at 360p, subtitles/logos at 540p, quality filters at SFT).
    gates: dict[str, GateConfig] = Field(
        default_factory=lambda: {
            "D_256p": GateConfig(dataset="D_256p", tolerate=["text", "low quality"]),
            "D_360p": GateConfig(dataset="D_360p", tolerate=["text", "low quality"]),
            "D_540p": GateConfig(dataset="D_540p", tolerate=["low quality"]),
            "D_540p_sft": GateConfig(dataset="D_540p_sft", kind="posttrain"),
            "D_720p_sft": GateConfig(dataset="D_720p_sft", kind="posttrain"),
        }
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        return "off" if value is False else value  # `mode: off` in YAML 1.1 is the boolean false

    @model_validator(mode="after")
    def _checks(self) -> AuditConfig:
        if self.mode == "file" and not self.verdicts_file:
            raise ValueError("mode 'file' needs verdicts_file (reelflow run --audit verdicts.json)")
        if self.min_sample > self.max_sample:
            raise ValueError(f"min_sample ({self.min_sample}) must not exceed max_sample ({self.max_sample})")
        return self

    def rate_and_threshold(self, gate: str) -> tuple[float, float]:
        g = self.gates[gate]
        rate, bad = REPORT_GATES[g.kind]
        return (g.sample_rate or rate, g.max_bad_rate or bad)
