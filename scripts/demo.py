#!/usr/bin/env python3
"""Set everything up and run the demo: a filled SQLite database served on 127.0.0.1:8080.

python3 scripts/demo.py                 # arguments go to `calltrack demo`
"""

from __future__ import annotations

import sys
from pathlib import Path

from _bootstrap import ROOT, ensure_venv, run


def main() -> None:
    bin_dir = ensure_venv("")
    if Path.cwd().resolve() != ROOT:
        # The demo runs in the project folder (its calltrack.db is there), and so do the
        # commands it prints: `.venv/bin/calltrack` is relative to that folder.
        print(f"in {ROOT}:", flush=True)
    run([str(bin_dir / "calltrack"), "demo", *sys.argv[1:]])


if __name__ == "__main__":
    main()
