"""Read calls in the import format (JSON Lines or a JSON array) and load them into the store.

A file is loaded whole or not at all: every record is validated while it streams into one
store transaction, and the first bad record (named by its line) rolls the transaction back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from calltrack.errors import ImportRejected, InvalidRecord
from calltrack.model import StoredCall, decode_record, prepare
from calltrack.store import ImportResult, Store

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_BYTE_OFFSET = re.compile(r"\(byte (\d+)\)")


def import_file(store: Store, account_id: int, path: Path, zone: ZoneInfo) -> ImportResult:
    """Import one file into one account; ImportRejected names the first bad line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportRejected(0, f"cannot read {path}: {exc.strerror or exc}") from exc
    return import_bytes(store, account_id, data, zone)


def import_bytes(store: Store, account_id: int, data: bytes, zone: ZoneInfo) -> ImportResult:
    """Import a JSON Lines document or a JSON array of records, all or nothing."""
    return store.import_calls(account_id, prepared_calls(data, zone))


def prepared_calls(data: bytes, zone: ZoneInfo) -> Iterator[tuple[int, StoredCall]]:
    """Validated calls with their line numbers; raises ImportRejected at the first bad one."""
    seen: dict[str, int] = {}
    for line, raw in _records(data):
        try:
            call = prepare(decode_record(raw), zone)
        except InvalidRecord as exc:
            raise ImportRejected(line, str(exc)) from None
        first = seen.setdefault(call.universal_id, line)
        if first != line:
            raise ImportRejected(
                line, f"universalId {call.universal_id!r} repeats the record of line {first}"
            )
        yield line, call


def _records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, raw JSON object) for every record of the document."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte order mark, as spreadsheet tools write
    if data.lstrip()[:1] == b"[":
        yield from _array_records(data)
        return
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            yield number, line


def _array_records(data: bytes) -> Iterator[tuple[int, bytes]]:
    try:
        items = _raw_list.decode(data)
    except msgspec.DecodeError as exc:
        raise ImportRejected(_error_line(data, str(exc)), f"not a JSON array: {exc}") from None
    offset = 0
    line = 1
    for item in items:
        raw = bytes(item)
        # The element's first line: find its text after the previous element, counting
        # newlines only over the stretch between them.
        found = data.find(raw, offset)
        if found >= 0:
            line += data.count(b"\n", offset, found)
            offset = found + len(raw)
            line_of_item = line
            line += raw.count(b"\n")
        else:
            line_of_item = line
        yield line_of_item, raw


def _error_line(data: bytes, message: str) -> int:
    """The line of a JSON syntax error: from msgspec's "(byte N)", or the last line when the
    document was cut short."""
    found = _BYTE_OFFSET.search(message)
    if found:
        return data.count(b"\n", 0, int(found.group(1))) + 1
    if "truncated" in message:
        return data.rstrip().count(b"\n") + 1
    return 1
