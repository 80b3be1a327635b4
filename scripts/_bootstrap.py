"""Shared by scripts/demo.py and scripts/check.py: a project virtualenv, installed and current."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def ensure_venv(extras: str) -> Path:
    """Create .venv if needed and install the project with ``extras``; return its bin dir.

    The install is skipped when pyproject.toml and the extras are unchanged since last time.
    """
    if not (BIN / "python").exists() and not (BIN / "python.exe").exists():
        print(f"creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".installed-{extras or 'base'}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        target = f".[{extras}]" if extras else "."
        print(f"installing calltrack{f'[{extras}]' if extras else ''} into .venv ...", flush=True)
        run([str(BIN / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip"])
        run([str(BIN / "python"), "-m", "pip", "install", "-q", "-e", target])
        stamp.write_text(digest)
    return BIN


def run(command: list[str]) -> int:
    """Run a command from the project root; exit with its code if it fails."""
    code = subprocess.call(command, cwd=ROOT)
    if code != 0:
        sys.exit(code)
    return code
