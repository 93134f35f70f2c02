"""Process environment for a run: Prefect home, Ray (local or cluster), thread limits.

``prepare_environment`` must run BEFORE prefect is imported: Prefect reads its settings
(home, API URL, analytics) at import time. Nothing is written into the user's home directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile

from infra.config import PipelineConfig

log = logging.getLogger(__name__)
# AF_UNIX socket paths are limited to 107 bytes; Ray nests ~60 bytes of session/socket names.
_MAX_RAY_TEMP_LEN = 45


def prepare_environment(cfg: PipelineConfig) -> None:
    state = os.path.abspath(cfg.state_dir)
    os.makedirs(state, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", os.path.join(state, "prefect"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    # A loaded 2-core machine (or CI box) can take longer than the 20 s default to start the ephemeral server.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if cfg.prefect.api_url:
        os.environ["PREFECT_API_URL"] = cfg.prefect.api_url
    # Libraries that default to ~/.cache, ~/.config or ~/.mlflow: keep them in the state dir.
    for var, sub in (("HF_HOME", "hf"), ("MPLCONFIGDIR", "mpl"), ("XDG_CACHE_HOME", "cache")):
        os.environ.setdefault(var, os.path.join(state, sub))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads weights at run time
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def ray_temp_dir(cfg: PipelineConfig) -> str:
    """Ray's temp dir under the local run root; a short /tmp path when that would be too long
    for Ray's unix sockets (or the run root is remote)."""
    root = cfg.storage.run_root
    if "://" not in root:
        candidate = os.path.join(os.path.abspath(root), ".ray")
        if len(candidate) <= _MAX_RAY_TEMP_LEN:
            return candidate
    digest = hashlib.sha1(os.path.abspath(cfg.state_dir).encode()).hexdigest()[:8]
    return os.path.join(tempfile.gettempdir(), f"reelflow-ray-{digest}")


def init_ray(cfg: PipelineConfig):
    """Connect to ``RAY_ADDRESS`` / ``ray.address`` or start a bounded local Ray."""
    import ray

    if ray.is_initialized():
        return ray
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    env_vars = {k: v for k, v in os.environ.items()
                if k.startswith(("REELFLOW_", "AWS_")) or k in ("TORCH_EXTENSIONS_DIR", "XDG_CACHE_HOME")}
    env_vars["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    runtime_env = {"env_vars": env_vars}
    if address:
        log.info("connecting to Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        temp = ray_temp_dir(cfg)
        os.makedirs(temp, exist_ok=True)
        ray.init(
            num_cpus=cfg.ray.num_cpus,
            object_store_memory=cfg.ray.object_store_mb * 1024 * 1024,
            include_dashboard=False,
            _temp_dir=temp,
            runtime_env=runtime_env,
            log_to_driver=True,
            configure_logging=True,
            logging_level=logging.WARNING,
        )
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # manifests identical across reruns
    ctx.enable_progress_bars = True
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # keep the bars, drop per-op chatter
    return ray
