"""Shared fixtures. Prefect reads its settings at import: point it at a private home first."""

from __future__ import annotations

import os
import tempfile

_STATE = tempfile.mkdtemp(prefix="reelflow-test-state-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_STATE, "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # loaded CI machines
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_STATE, "mpl"))

import pytest  # noqa: E402

from infra.config import PipelineConfig, load_config  # noqa: E402


@pytest.fixture
def make_cfg(tmp_path):
    """A tiny-profile config whose every path lives under this test's tmp dir."""

    def build(*overrides: str) -> PipelineConfig:
        return load_config(
            "tiny",
            [f"storage.run_root={tmp_path / 'runs'}", f"state_dir={tmp_path / 'state'}", *overrides],
        )

    return build
