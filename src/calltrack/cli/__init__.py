"""The admin CLI (``calltrack``): thin commands over the library."""

from calltrack.cli.main import main

__all__ = ["main"]
