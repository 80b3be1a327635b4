"""``python -m calltrack``: the CLI (how `serve` starts its deliverer process)."""

from calltrack.cli import main

main()
