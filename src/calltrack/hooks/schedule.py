"""When a failed delivery is tried again.

After the first try: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h (Standard Webhooks'
schedule, stretched to three days); then the delivery has failed. An answer's ``Retry-After``
(429, 503) makes the wait at least that long.
"""

from __future__ import annotations

from typing import Final

from calltrack.retry_after import parse_retry_after

__all__ = [
    "LONGEST_RETRY_AFTER",
    "RETRY_DELAYS",
    "next_delay",
    "parse_retry_after",
    "parse_schedule",
]

RETRY_DELAYS: Final[tuple[float, ...]] = (
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
)
# A Retry-After longer than this is taken as this: a receiver cannot park a delivery forever.
LONGEST_RETRY_AFTER: Final = 24 * 3600


def parse_schedule(text: str) -> tuple[float, ...]:
    """A schedule from ``CALLTRACK_HOOKS_SCHEDULE`` (seconds, comma-separated); "" is the
    standard one. Raises ValueError naming the problem."""
    if not text.strip():
        return RETRY_DELAYS
    delays = tuple(float(part) for part in text.split(","))
    if not delays or any(delay < 0 for delay in delays):
        raise ValueError("expected seconds >= 0, comma-separated")
    return delays


def next_delay(
    attempts: int, schedule: tuple[float, ...], retry_after: float | None = None
) -> float | None:
    """Seconds until the next try after ``attempts`` tries failed; None: no try is left."""
    if attempts < 1 or attempts > len(schedule):
        return None
    delay = schedule[attempts - 1]
    if retry_after is not None:
        delay = max(delay, min(retry_after, LONGEST_RETRY_AFTER))
    return delay
