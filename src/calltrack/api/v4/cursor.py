"""The changes feed's cursor: opaque to clients, a small state to the service.

A cursor says how far the feed is (the last change number served), which accounts' calls it
has been following (so that an account that becomes visible later is first filled in with
its calls up to there) and, while such a fill runs, how far the fill is.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, replace

PREFIX = "c1."
_LARGEST = 2**63 - 1  # what the store's BIGINT columns hold


@dataclass(frozen=True, slots=True)
class FeedCursor:
    seq: int  # changes up to this number are served (for the accounts in ``known``)
    known: tuple[int, ...]  # accounts followed so far
    filling: tuple[int, ...] = ()  # accounts being filled in with their calls up to ``seq``
    fill_after: int = 0  # the fill has served their calls numbered up to this

    def encode(self) -> str:
        return encode_state(self.seq, self.known, self.filling, self.fill_after)

    def encoder(self) -> Callable[[int, int], bytes]:
        """``encode`` of this cursor with another ``seq`` and ``fill_after``, as ASCII bytes: a
        read writes one cursor per change, so the account lists are joined only once here."""
        rest = f".{'-'.join(map(str, self.known))}.{'-'.join(map(str, self.filling))}"
        prefix = PREFIX.encode()
        b64 = base64.urlsafe_b64encode

        def encode(seq: int, fill_after: int) -> bytes:
            return prefix + b64(f"{seq}.{fill_after}{rest}".encode()).rstrip(b"=")

        return encode

    def filled(self) -> FeedCursor:
        """The cursor once the fill is done: its accounts are followed from ``seq`` on."""
        return replace(
            self, known=tuple(sorted({*self.known, *self.filling})), filling=(), fill_after=0
        )


def encode_state(
    seq: int, known: tuple[int, ...], filling: tuple[int, ...], fill_after: int
) -> str:
    text = f"{seq}.{fill_after}.{'-'.join(map(str, known))}.{'-'.join(map(str, filling))}"
    return PREFIX + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


class BadCursor(ValueError):
    """Not a cursor this service issued."""


def decode(text: str) -> FeedCursor:
    if not text.startswith(PREFIX) or len(text) > 20_000:
        raise BadCursor("not a cursor of this feed")
    body = text[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
        seq, fill_after, known, filling = raw.split(".")
        cursor = FeedCursor(
            seq=int(seq),
            known=_ids(known),
            filling=_ids(filling),
            fill_after=int(fill_after),
        )
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("not a cursor of this feed") from None
    if (
        not 0 <= cursor.fill_after <= cursor.seq <= _LARGEST
        or max(cursor.known, default=0) > _LARGEST
    ):
        raise BadCursor("not a cursor of this feed")
    return cursor


def _ids(text: str) -> tuple[int, ...]:
    ids = tuple(int(part) for part in text.split("-")) if text else ()
    if any(not 1 <= i <= _LARGEST for i in ids):
        raise ValueError("bad account id")
    return ids
