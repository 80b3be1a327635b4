"""Node.js for the snippet's tests: its path, or a loud skip (a failure under CI=true)."""

from __future__ import annotations

import os
import shutil

import pytest


def node_or_skip() -> str:
    """The ``node`` executable on PATH; without one skip, or fail when ``CI=true``."""
    node = shutil.which("node")
    if node is not None:
        return node
    why = "node is not on PATH: the snippet's JavaScript checks cannot run (apt-get install nodejs)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{why}; CI=true requires them")
    pytest.skip(f"SKIPPED LOUDLY: {why}")
