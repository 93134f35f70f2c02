"""Pydantic configuration for every boundary of reelflow.

One YAML tree: ``configs/pipeline.yaml`` (defaults) <- ``configs/profiles/<profile>.yaml`` <-
``--set a.b=c`` overrides. Validation happens before any work; errors name the dotted field
path and what is allowed (see :func:`format_validation_error`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from infra.config_base import Cfg as _Cfg
from infra.config_base import ConfigError, StageResources, format_validation_error, load_yaml  # noqa: F401 (re-exported)
from infra.config_caption import CaptionConfig
from infra.config_datasets import AuditConfig, BalanceConfig, DatasetsConfig
from infra.config_distill import DISTILL_STAGES, CaptionerDistillConfig
from infra.config_filters import ScoreConfig
from infra.config_post import PostTrainConfig
from infra.config_train import POST_STAGES, TRAIN_STAGES, TrainConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PROFILES = ("tiny", "wan-1.3b", "wan-14b", "cluster-local")


class StorageConfig(_Cfg):
    run_root: str = Field("runs", description="Local folder or s3://bucket/prefix holding all runs")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto)")
    s3_region: str | None = None


class TrackingConfig(_Cfg):
    # None -> sqlite:///<state_dir>/mlflow.db, artifacts under <state_dir>/mlartifacts
    mlflow_uri: str | None = None
    experiment: str = "reelflow"


class RayConfig(_Cfg):
    address: str | None = Field(None, description="Ray cluster address; None starts a local Ray")
    num_cpus: int | None = Field(2, ge=1, description="CPUs for a local Ray (None = all)")
    object_store_mb: int = Field(1024, ge=128)

    @model_validator(mode="before")
    @classmethod
    def _no_stage_table(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stages" in data:
            raise ValueError("`ray.stages` is gone: each stage declares its Ray resources in its own config, e.g. "
                             "stages.segment.resources, train.latents.resources, post.pairs.resources (see "
                             "`declared_resources` in infra/config.py)")
        return data


class PrefectConfig(_Cfg):
    api_url: str | None = Field(None, description="Prefect server API; None = ephemeral server")


class CorpusConfig(_Cfg):
    videos: int = Field(6, ge=1, le=10_000)
    seed: int = 0
    width: int = Field(320, ge=64, multiple_of=2)
    height: int = Field(180, ge=36, multiple_of=2)
    fps: float = Field(24.0, gt=0, le=120)
    shots_per_video: tuple[int, int] = (6, 10)  # inclusive range
    shot_seconds: tuple[float, float] = (1.5, 5.0)
    defect_rate: float = Field(0.35, ge=0, le=1, description="Chance a shot carries a planted defect")
    workers: int = Field(0, ge=0, description="Processes rendering films in generate_corpus; 0 = one per CPU")
    resources: StageResources = Field(default_factory=StageResources, description="Ray resources per actor")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> CorpusConfig:
        for name in ("shots_per_video", "shot_seconds"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got ({lo}, {hi})")
        return self


class IngestConfig(_Cfg):
    extensions: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts",
                                   ".mts", ".flv", ".3gp", ".wmv", ".ogv")
    image_extensions: tuple[str, ...] = Field(
        (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"),
        description="Still images, ingested as image samples (report 3.3: 256p/360p train on images + videos)",
    )
    max_width: int = Field(8192, ge=16, description="Larger frames are recorded as errors (absurd size)")
    max_height: int = Field(8192, ge=16)
    hash_bytes: int = Field(
        0, ge=0, description="Bytes hashed for source_id; 0 = whole file (stable, slower on huge files)"
    )
    resources: StageResources = Field(default_factory=StageResources, description="Ray resources per actor")


class SegmentConfig(_Cfg):
    """Shot segmentation (report section 3.1): PySceneDetect's AdaptiveDetector, a colour-palette
    content detector and TransNetV2 over one decode, merged into boundaries (models/shot_*.py)."""

    analysis_width: int = Field(
        48, ge=32, le=1920, description="Width of the frames fed to AdaptiveDetector (aspect kept); at 48 a 16:9 "
        "source needs one swscale call, shared with TransNetV2's 48x27 input"
    )
    scale_filter: Literal["fast_bilinear", "area", "bilinear"] = Field(
        "fast_bilinear", description="swscale filter making the small frames: fast_bilinear samples (cheapest: "
        "0.1 ms/frame from 720p; keeps the colour distribution the palette test reads), area averages (anti-aliased, "
        "closer to TransNetV2's training input; 1.4 ms/frame from 720p)"
    )
    adaptive_threshold: float = Field(3.0, gt=0, description="AdaptiveDetector: score / neighbours' mean ratio for a cut")
    adaptive_min_content_val: float = Field(15.0, ge=0, description="AdaptiveDetector: least content change for a cut")
    adaptive_window_width: int = Field(2, ge=1, le=16, description="AdaptiveDetector: neighbour frames on each side")
    transnet_threshold: float = Field(0.5, gt=0, lt=1, description="TransNetV2 probability that marks a transition frame")
    transnet_mode: Literal["full", "arbiter"] = Field(
        "arbiter",
        description="full: TransNetV2 scores every frame (GPU); arbiter: only candidates whose content evidence "
        "lies within arbiter_margin of its threshold (CPU: TransNetV2 is ~10x slower than decoding there)",
    )
    transnet_device: str = Field("auto", description="torch device for TransNetV2: auto (cuda if present), cpu, cuda")
    torch_threads: int = Field(0, ge=0, le=256, description="torch intra-op threads for a worker; 0 = leave torch's default")
    merge: Literal["union", "transnet_confirmed", "vote"] = Field(
        "union", description="union: any detector; vote: two detectors agree; transnet_confirmed: TransNetV2 agrees"
    )
    merge_tolerance_frames: int = Field(3, ge=0, le=48, description="Candidates this close are one boundary")
    min_shot_frames: int = Field(8, ge=1, description="Boundaries leaving fewer clean frames between them are merged")
    cut_threshold: float = Field(
        0.38, gt=0, lt=1, description="Least histogram change across a cut (lit frames before vs after, past flashes/black)"
    )
    change_threshold: float = Field(
        0.2, gt=0, lt=1, description="Least palette change across a gap for a boundary (gradual transitions)"
    )
    arbiter_margin: float = Field(
        0.06, ge=0, lt=0.5, description="Evidence within this of its threshold is decided by TransNetV2 when it runs"
    )
    arbiter_budget: float = Field(
        0.01, ge=0, le=1, description="Arbiter mode: most frames TransNetV2 may score, as a share of the video's "
        "frames (a question costs ~60 frames; on 2 CPU cores 1% of frames adds ~30% time at 320x180, ~3% at 720p)"
    )
    change_gap_s: float = Field(
        0.35, gt=0, le=5, description="Half the gap the palette test leaves between its two sides, seconds "
        "(transitions up to ~3x as long are found: their middle frames differ from both shots)"
    )
    change_window_s: float = Field(
        1.1, gt=0, le=10, description="Reach of the palette test, seconds; minus the gap it must exceed any flash, "
        "black run or object crossing the frame, and stay under the shortest shot"
    )
    block_frames: int = Field(1024, ge=64, le=65536, description="Frames analysed per step: bounds a worker's memory")
    use_transnet: bool = Field(True, description="Load TransNetV2 (arbiter or full mode); false: never")
    use_adaptive: bool = Field(True, description="Run PySceneDetect's AdaptiveDetector as a cut detector")
    resources: StageResources = Field(default_factory=StageResources,
                                      description="Ray resources per actor (a GPU for TransNetV2's full mode)")

    @model_validator(mode="after")
    def _window_beyond_gap(self) -> SegmentConfig:
        if self.change_window_s <= self.change_gap_s:
            raise ValueError(
                f"change_window_s ({self.change_window_s}) must be larger than change_gap_s ({self.change_gap_s})"
            )
        return self


class ClipsConfig(_Cfg):
    min_seconds: float = Field(1.0, gt=0)
    max_seconds: float = Field(10.0, gt=0)
    trim_frames: int = Field(2, ge=0, description="Frames dropped at each cut edge (detector jitter)")
    crf: int = Field(18, ge=0, le=51)
    preset: str = "veryfast"
    encoder_threads: int = Field(
        1, ge=0, le=64, description="libx264 threads; x264's output depends on its thread count, so a fixed count "
        "makes clip files byte-identical between runs (0 = x264's automatic count: faster, not reproducible)"
    )
    resources: StageResources = Field(default_factory=StageResources, description="Ray resources per actor")

    @model_validator(mode="after")
    def _min_below_max(self) -> ClipsConfig:
        if self.min_seconds >= self.max_seconds:
            raise ValueError(
                f"min_seconds ({self.min_seconds}) must be smaller than max_seconds ({self.max_seconds})"
            )
        return self


class StagesConfig(_Cfg):
    ingest: IngestConfig = IngestConfig()
    segment: SegmentConfig = SegmentConfig()
    clips: ClipsConfig = ClipsConfig()
    score: ScoreConfig = ScoreConfig()
    caption: CaptionConfig = CaptionConfig()
    balance: BalanceConfig = BalanceConfig()
    captioner_distill: CaptionerDistillConfig = CaptionerDistillConfig()


# The curate flow's stages in order (``--until`` accepts any of them).
STAGE_ORDER = ("ingest", "segment", "clips", "score", "caption", "D_256p", "D_360p", "D_540p", "D_post", "D_540p_sft", "D_720p_sft")
UNTIL_CHOICES = STAGE_ORDER + TRAIN_STAGES + POST_STAGES + DISTILL_STAGES  # every stage --until (and --replay) names, in order


class PipelineConfig(_Cfg):
    profile: Literal["tiny", "wan-1.3b", "wan-14b", "cluster-local"] = "tiny"
    input: str | None = Field(None, description="Folder or s3:// prefix of raw videos; None = generate corpus")
    state_dir: str = Field(".reelflow", description="Local state: Prefect home, MLflow db, Ray temp")
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()
    ray: RayConfig = RayConfig()
    prefect: PrefectConfig = PrefectConfig()
    corpus: CorpusConfig = CorpusConfig()
    stages: StagesConfig = StagesConfig()
    datasets: DatasetsConfig = DatasetsConfig()
    audit: AuditConfig = AuditConfig()
    train: TrainConfig = TrainConfig()
    post: PostTrainConfig = PostTrainConfig()

    @model_validator(mode="after")
    def _local_caches_under_state_dir(self) -> PipelineConfig:
        """Tiny random weights are built once per checkout, in the state dir, not in the cwd."""
        default = ".reelflow/models"
        for section in (self.stages.score.aesthetic, self.stages.balance.classifier, self.stages.caption):
            if section.cache_dir == default:
                object.__setattr__(section, "cache_dir", str(Path(self.state_dir) / "models"))
        return self


def declared_resources(cfg: BaseModel, prefix: str = "") -> dict[str, StageResources]:
    """Every stage's declared ``resources``, by the dotted path of its config ("stages.segment", "train",
    "train.latents", "post.reward"): what the profile asks of the cluster, stage by stage."""
    found: dict[str, StageResources] = {}
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if isinstance(value, StageResources):  # `resources`: the stage's own; another name: one of its pools
            found[(prefix if name == "resources" else f"{prefix}{name}").rstrip(".")] = value
        elif isinstance(value, BaseModel):
            found.update(declared_resources(value, f"{prefix}{name}."))
    return found


def value_hash(value: Any) -> str:
    """Stable 16-hex hash of JSON-able values (dict keys sorted; anything else by its str)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: BaseModel) -> str:
    """Stable hash of a config's values: part of every stage's resume key. A stage's ``resources`` are left
    out: they say where its actors run, not what they compute (rows come back in item order), so moving a
    run to GPU nodes or resizing a pool resumes its published stages."""
    pools = {n for n in type(cfg).model_fields if isinstance(getattr(cfg, n), StageResources)}
    return value_hash(cfg.model_dump(mode="json", exclude=pools or None))


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set stages.clips.min_seconds=2")
    path, raw = item.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set {item!r}: empty key path")
    value: Any = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw.strip()  # YAML 1.1 reads on/off/yes/no as booleans; `audit.mode=off` means "off"
    for key in reversed(keys):
        value = {key: value}
    return value


def models_profile(profile: str, config_dir: Path = CONFIG_DIR) -> str:
    """The profile whose models ``profile`` runs: the one it ``extends``, else itself. Filter thresholds are
    set per models profile (``by_profile`` / ``off_in``: the tiny aesthetic head is random), so the
    cluster-local profile, the tiny models on a cluster, filters as tiny does."""
    return load_yaml(config_dir / "profiles" / f"{profile}.yaml").get("extends", profile)


def load_config(
    profile: str = "tiny", overrides: list[str] | tuple[str, ...] = (), config_dir: Path = CONFIG_DIR
) -> PipelineConfig:
    """Defaults <- profile <- overrides, validated once, before any work starts."""
    if profile not in PROFILES:
        raise ConfigError(f"profile {profile!r} is unknown; allowed: {', '.join(PROFILES)}")
    tree = load_yaml(config_dir / "pipeline.yaml")
    chosen = load_yaml(config_dir / "profiles" / f"{profile}.yaml")
    if "extends" in chosen:  # a profile on top of another one (cluster-local = tiny models on a cluster)
        tree = _deep_merge(tree, load_yaml(config_dir / "profiles" / f"{chosen.pop('extends')}.yaml"))
    tree = _deep_merge(tree, chosen)
    tree["profile"] = profile
    for item in overrides:
        tree = _deep_merge(tree, parse_override(item))
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, PipelineConfig, f"profile {profile}")) from None
