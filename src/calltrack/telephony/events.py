"""The one event type every telephony adapter produces (the contract's generic event)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class TelephonyEvent:
    event: Literal["call.started", "call.answered", "call.ended", "call.recording"]
    call_id: str
    at: int  # unix seconds
    caller: str = ""
    called: str = ""
    forwarded_to: str = ""
    talk_seconds: int | None = None
    disposition: str = ""  # answered|busy|no_answer|cancelled|failed
    sip_status_first: int | None = None
    sip_status_second: int | None = None
    recording_url: str = ""
