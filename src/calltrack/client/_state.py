"""The export's state files: ``FILE.part.state`` (resume) and the ``--since-last`` file,
which holds either a v3 position (a watermark) or a v4 changes-feed cursor.

Both are JSON, written atomically (a temporary file, synced, then renamed over the old one),
so a reader sees the old content or the new, never a mix. See docs/client.md for examples.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from calltrack.client._client import Client, Method
from calltrack.client._errors import ExportError
from calltrack.client.writers import Format
from calltrack.model import CallRecord, parse_local

STATE_VERSION: Final = 1
FEED_STATE_VERSION: Final = 2
_S = TypeVar("_S", bound=msgspec.Struct)


class Watermark(msgspec.Struct):
    """The last ``callTime`` written and the universalIds written at that exact second."""

    call_time: str
    ids: set[str]

    def admit(self, call: CallRecord) -> bool:
        """False for a call already written; otherwise moves the mark past it."""
        if call.callTime == self.call_time:
            if call.universalId in self.ids:
                return False
            self.ids.add(call.universalId)
        else:
            self.call_time = call.callTime
            self.ids = {call.universalId}
        return True


class Query(msgspec.Struct, frozen=True):
    endpoint: str
    method: Method
    start: str = msgspec.field(name="from")
    end: str = msgspec.field(name="to")
    format: Format
    excel: bool


class PartState(msgspec.Struct):
    """``FILE.part.state``: how far an unfinished export got."""

    query: Query
    next_page: int = 0
    pages: int = 0
    calls: int = 0
    skipped: int = 0
    offset: int = 0
    walked: bool = False
    watermark: Watermark | None = None
    last_page_ids: set[str] = msgspec.field(default_factory=set)
    version: int = STATE_VERSION


class SinceState(msgspec.Struct):
    """The ``--since-last`` state file: where the next incremental run starts."""

    endpoint: str
    method: str
    start: str = msgspec.field(name="from")
    watermark: Watermark | None = None
    updated: str = ""
    version: int = STATE_VERSION


class FeedState(msgspec.Struct):
    """The ``--since-last`` state of a merged export on the v4 changes feed."""

    endpoint: str  # the v4 base, e.g. https://host/api/v4/
    method: str
    cursor: str
    start: str = msgspec.field(name="from", default="")
    end: str = msgspec.field(name="to", default="")
    updated: str = ""
    version: int = FEED_STATE_VERSION


def holds_feed_cursor(path: Path) -> bool:
    """Whether the ``--since-last`` file at ``path`` exists and holds a v4 feed cursor."""
    if not path.exists():
        return False
    try:
        data = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise ExportError(f"cannot read the --since-last state {path}: {exc}") from None
    return isinstance(data, dict) and "cursor" in data


def load_feed(path: Path, client: Client, method: str) -> FeedState | None:
    if not path.exists():
        return None
    state = _load(path, FeedState, "--since-last state")
    if (state.endpoint, state.method) != (client.v4_endpoint, method):
        raise ExportError(
            f"{path} holds the feed cursor of {state.method} at {state.endpoint}, "
            f"not of {method} at {client.v4_endpoint}: use another state file"
        )
    return state


def save_feed(path: Path, state: FeedState) -> None:
    updated = datetime.now(UTC).replace(microsecond=0).isoformat()
    save_atomic(path, msgspec.structs.replace(state, updated=updated))


def load_part(path: Path) -> PartState:
    return _load(path, PartState, "export state")


def load_since(path: Path, client: Client, method: str) -> SinceState | None:
    if not path.exists():
        return None
    if holds_feed_cursor(path):
        raise ExportError(
            f"{path} holds a cursor of the v4 changes feed, which merges into .jsonl and "
            ".parquet outputs only: use such an output, or another state file"
        )
    since = _load(path, SinceState, "--since-last state")
    if (since.endpoint, since.method) != (client.endpoint, method):
        raise ExportError(
            f"{path} holds the position of {since.method} at {since.endpoint}, "
            f"not of {method} at {client.endpoint}: use another state file"
        )
    return since


def save_since(path: Path, client: Client, state: PartState) -> None:
    query = state.query
    start = query.start
    if state.watermark is not None:
        start = str(parse_local(state.watermark.call_time, client.zone, "callTime"))
    updated = datetime.now(UTC).replace(microsecond=0).isoformat()
    since = SinceState(query.endpoint, query.method, start, state.watermark, updated)
    save_atomic(path, since)


def _load(path: Path, kind: type[_S], what: str) -> _S:
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (OSError, msgspec.DecodeError) as exc:
        raise ExportError(f"cannot read the {what} {path}: {exc}") from None


def save_atomic(path: Path, value: msgspec.Struct) -> None:
    """Write ``path`` so that a reader sees the old content or the new, never a mix."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as stream:
        stream.write(msgspec.json.format(msgspec.json.encode(value), indent=1) + b"\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
