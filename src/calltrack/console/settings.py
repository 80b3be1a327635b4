"""The console's settings page (being built: its routes and messages come next)."""

from __future__ import annotations

from typing import Final

from starlette.routing import BaseRoute

MESSAGES: Final[dict[str, tuple[str, str]]] = {}


def routes() -> list[BaseRoute]:
    return []
