#!/usr/bin/env python3
"""Every check, as CI runs it: format, lint, types, tests. Extra arguments go to pytest.

python3 scripts/check.py            # everything
python3 scripts/check.py -k access  # everything, tests filtered
"""

from __future__ import annotations

import subprocess
import sys

from _bootstrap import ROOT, ensure_venv, run

PATHS = ["src", "tests", "scripts", "bench"]


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
    print("== tests", flush=True)
    code = subprocess.call([str(bin_dir / "python"), "-m", "pytest", *sys.argv[1:]], cwd=ROOT)
    if code == 5:
        print("pytest collected no tests: that is a failure here", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
