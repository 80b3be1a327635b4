"""Webhooks: a call's events pushed to the account's systems, signed, retried, never lost.

``payload`` renders what is sent, ``signing`` signs it (Standard Webhooks), ``schedule`` says
when a failed delivery is tried again, ``targets`` keeps deliveries off private networks, and
``deliverer`` sends what the store's outbox holds (``calltrack.store.hooks``).
"""

from __future__ import annotations

from typing import Final, Literal

HookEvent = Literal["BEFORE_CALL_START", "AFTER_CALL_FINISH", "CALL_UPDATED"]
EVENTS: Final[tuple[HookEvent, ...]] = ("BEFORE_CALL_START", "AFTER_CALL_FINISH", "CALL_UPDATED")
# The events v3's `hooks` field can name; CALL_UPDATED is beyond the original.
V3_EVENTS: Final = ("BEFORE_CALL_START", "AFTER_CALL_FINISH")
METHODS: Final = ("POST", "PUT", "GET", "DELETE")
