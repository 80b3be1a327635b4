"""Counts in words, for what the CLI, the demo and the export client print."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 call``, ``2 calls``, ``1,000 calls``: a count and its noun."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
