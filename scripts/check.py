#!/usr/bin/env python3
"""Every check, as CI runs it: format, lint, types, tests. Extra arguments go to pytest.

python3 scripts/check.py            # everything
python3 scripts/check.py -k access  # everything, tests filtered
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from _bootstrap import ROOT, ensure_venv, run

PATHS = ["src", "tests", "scripts", "bench"]
# The page snippet (plain JavaScript, package data) and its Node tests.
JS_PATHS = [
    "eslint.config.mjs",
    "src/calltrack/tracking",
    "src/calltrack/console/static/console.js",
    "tests/js",
]
ESLINT_PACKAGES = ["eslint@9", "globals@16"]


def js_lint() -> None:
    """eslint on JS_PATHS, installed into .venv/node_modules (out of the tree) on first use.

    Without npm the step is skipped with a loud line, and fails when CI=true.
    """
    npm = shutil.which("npm")
    if npm is None:
        print("== js-lint SKIPPED: npm not found (install nodejs and npm)", flush=True)
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            sys.exit("js-lint: CI=true requires npm")
        return
    prefix = ROOT / ".venv"
    eslint = prefix / "node_modules" / ".bin" / ("eslint.cmd" if os.name == "nt" else "eslint")
    stamp = prefix / ".installed-js-lint"
    wanted = " ".join(ESLINT_PACKAGES)
    if not eslint.exists() or not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing {wanted} into .venv/node_modules ...", flush=True)
        run([npm, "install", "--prefix", str(prefix), *ESLINT_PACKAGES, "--no-audit", "--no-fund"])
        stamp.write_text(wanted)
    print(f"== js-lint: eslint {' '.join(JS_PATHS)}", flush=True)
    run([str(eslint), *JS_PATHS])


def main() -> None:
    bin_dir = ensure_venv("dev")
    steps = [
        ("format", [str(bin_dir / "ruff"), "format", "--check", *PATHS]),
        ("lint", [str(bin_dir / "ruff"), "check", *PATHS]),
        ("types", [str(bin_dir / "mypy")]),
    ]
    for name, command in steps:
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        run(command)
    js_lint()
    print("== tests", flush=True)
    code = subprocess.call([str(bin_dir / "python"), "-m", "pytest", *sys.argv[1:]], cwd=ROOT)
    if code == 5:
        print("pytest collected no tests: that is a failure here", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
