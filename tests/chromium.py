"""Debian's Chromium for the browser tests (Playwright drives it; never `playwright install`, which downloads
a browser from outside the package registries). Missing, it is installed the way `make setup` and .ci/run do
(apt-get, through sudo unless root) before a test gives up on it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-gpu"]


def _install() -> str:
    """Runs the install; returns what went wrong ('' when it ran)."""
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None:
        return "not root and no sudo"
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]):
        done = subprocess.run(sudo + cmd, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode:
            return f"`{' '.join(sudo + cmd)}` failed: {done.stderr.strip()[-300:]}"
    return ""


def chromium_path() -> str:
    """The Chromium binary, installed first when missing; a clear failure only after the install was tried."""
    if not os.path.exists(CHROMIUM):
        problem = _install()
        if not os.path.exists(CHROMIUM):
            pytest.fail(f"{CHROMIUM} missing and could not be installed ({problem or 'apt-get ran, no binary'}): "
                        "apt-get install -y chromium chromium-driver (what `make setup` and .ci/run do)")
    return CHROMIUM
