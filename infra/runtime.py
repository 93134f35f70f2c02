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


VERBOSE_ENV = "REELFLOW_VERBOSE"
# Quiet by default: Hugging Face's per-load progress bars and advice, tokenizers' fork warning, MLflow's
# database-migration INFO lines, Ray's C++ component logs. ``reelflow -v`` turns them all back on.
_QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # also transformers' "Loading weights" / "Writing model shards" bars
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "RAY_BACKEND_LOG_LEVEL": "fatal",
}
# Python loggers that warn about nothing a pipeline user can act on.
_QUIET_LOGGERS = ("ray._private.authentication.authentication_token_setup", "DeepSpeed", "alembic",
                  "mlflow.store.db.utils", "httpx")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def quiet_libraries(be_verbose: bool) -> None:
    """Set library chatter before those libraries are imported (they read these at import); the
    variables reach local Ray workers, which inherit this environment, and remote ones via
    :func:`init_ray`'s runtime env."""
    os.environ[VERBOSE_ENV] = "1" if be_verbose else "0"
    if be_verbose:
        return
    for var, value in _QUIET_ENV.items():
        os.environ.setdefault(var, value)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _requiet_after_import() -> None:
    """Some libraries set their logger's level when imported; put ours back."""
    if not verbose():
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


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
                if k.startswith(("REELFLOW_", "AWS_")) or k in ("TORCH_EXTENSIONS_DIR", "XDG_CACHE_HOME", *_QUIET_ENV)}
    # Worker stdout/stderr (library progress bars, C++ logs) reach the console only with -v; a worker's
    # exception still reaches the driver as the stage's error, with its traceback.
    to_driver = verbose() or VERBOSE_ENV not in os.environ
    env_vars["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    runtime_env = {"env_vars": env_vars}
    if address:
        log.info("connecting to Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=to_driver)
    else:
        temp = ray_temp_dir(cfg)
        os.makedirs(temp, exist_ok=True)
        ray.init(
            num_cpus=cfg.ray.num_cpus,
            object_store_memory=cfg.ray.object_store_mb * 1024 * 1024,
            include_dashboard=False,
            _temp_dir=temp,
            runtime_env=runtime_env,
            log_to_driver=to_driver,
            configure_logging=True,
            logging_level=logging.WARNING,
        )
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # manifests identical across reruns
    ctx.enable_progress_bars = True
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # drop per-op chatter
    _requiet_after_import()
    return ray
