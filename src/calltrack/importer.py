"""Read calls in the import format (JSON Lines or a JSON array) and load them into the store.

A file is loaded whole or not at all: every record is validated while it streams into one
store transaction, and the first bad record rolls the transaction back. The record is named
by its line in JSON Lines, and by its place in a JSON array ("record 3 (index 2)"), where
every record may sit on line 1.

A record without a ``universalId`` gets one derived from its content (``model.content_id``),
so importing a file again changes nothing; a second record with the same content in one file
is the same call, and is skipped.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

import msgspec

from calltrack.errors import ImportRejected, InvalidRecord, UnreadableFile
from calltrack.model import StoredCall, decode_record, prepare
from calltrack.store import ImportResult, Store
from calltrack.store.calls import Announce

_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, as spreadsheet tools write
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_BYTE_OFFSET = re.compile(r"\(byte (\d+)\)")


def import_file(store: Store, account_id: int, path: Path, zone: ZoneInfo) -> ImportResult:
    """Import one file into one account; ImportRejected names the first bad record,
    UnreadableFile a file that cannot be read.

    JSON Lines stream from the file, so a large import never sits in memory whole; a JSON
    array has to be read at once.
    """
    try:
        with path.open("rb") as file:
            head = file.read(4096)
            if head.startswith(_BOM):
                head = head[len(_BOM) :]
            if head.lstrip()[:1] == b"[":
                return _load_array(store, account_id, head + file.read(), zone)
            return _load(store, account_id, _numbered_lines(_lines(head, file)), zone)
    except FileNotFoundError:
        raise UnreadableFile(f"no such file: {path}") from None
    except OSError as exc:
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from None


def import_bytes(
    store: Store, account_id: int, data: bytes, zone: ZoneInfo, announce: Announce = None
) -> ImportResult:
    """Import a JSON Lines document or a JSON array of records, all or nothing
    (``announce``: the webhooks the change sends, as call/put's does)."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]  # a UTF-8 byte order mark, as spreadsheet tools write
    if data.lstrip()[:1] == b"[":
        return _load_array(store, account_id, data, zone, announce)
    return _load(store, account_id, _numbered_lines(data.split(b"\n")), zone, announce=announce)


def _load(
    store: Store,
    account_id: int,
    records: Iterable[tuple[int, bytes]],
    zone: ZoneInfo,
    array: bool = False,
    announce: Announce = None,
) -> ImportResult:
    """``records`` are (line, raw) for JSON Lines, (index, raw) for an array (``array``)."""
    # Validating in a second thread or in worker processes while the store writes was
    # measured and gave nothing here (bench/RESULTS.md): decoding holds the GIL, and handing
    # rendered calls between processes costs what it saves.
    calls = _prepared(records, zone, account_id, array)
    return store.import_calls(account_id, calls, announce=announce)


def _load_array(
    store: Store, account_id: int, data: bytes, zone: ZoneInfo, announce: Announce = None
) -> ImportResult:
    """Import the records of a JSON array; a rejection names the record by its index."""
    try:
        items = _raw_list.decode(data)
    except msgspec.DecodeError as exc:
        raise ImportRejected(_error_line(data, str(exc)), f"not a JSON array: {exc}") from None
    try:
        records = ((index, bytes(item)) for index, item in enumerate(items))
        return _load(store, account_id, records, zone, array=True, announce=announce)
    except ImportRejected as exc:
        # The store names a record by the number it was handed: here, the index.
        index = exc.index if exc.index is not None else exc.line
        line = _first_lines(data, items)[index]
        raise ImportRejected(line, exc.reason, index) from None


def _prepared(
    records: Iterable[tuple[int, bytes]], zone: ZoneInfo, account_id: int, array: bool
) -> Iterator[tuple[int, StoredCall]]:
    """(line or index, call) for each record; the first bad one raises ImportRejected."""
    seen: dict[str, int] = {}
    for number, raw in records:
        try:
            record = decode_record(raw)
            given = record.universalId
            call = prepare(record, zone, account_id)
        except InvalidRecord as exc:
            raise _rejected(number, str(exc), array) from None
        first = seen.setdefault(call.universal_id, number)
        if first != number:
            if not given:
                continue  # no id, and the content of an earlier record: the same call
            where = f"record {first + 1} (index {first})" if array else f"line {first}"
            reason = f"`universalId` {msgspec.json.encode(given).decode()} repeats {where}"
            raise _rejected(number, reason, array)
        yield number, call


def _rejected(number: int, reason: str, array: bool) -> ImportRejected:
    # An array's record gets its line from _load_array, which has the document to count it.
    return ImportRejected(0, reason, number) if array else ImportRejected(number, reason)


def _lines(head: bytes, file: BinaryIO) -> Iterator[bytes]:
    """The lines (without their newline) of a file whose first bytes were read into ``head``."""
    *complete, partial = head.split(b"\n")
    yield from complete
    for line in itertools.chain([partial + file.readline()], file):
        yield line[:-1] if line.endswith(b"\n") else line


def _numbered_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line


def _first_lines(data: bytes, items: list[msgspec.Raw]) -> list[int]:
    """The line on which each element of a JSON array begins (counted only on a rejection)."""
    lines: list[int] = []
    offset = 0
    line = 1
    for item in items:
        raw = bytes(item)
        # Find the element's text after the previous element, counting newlines only over
        # the stretch between them.
        found = data.find(raw, offset)
        if found >= 0:
            line += data.count(b"\n", offset, found)
            offset = found + len(raw)
        lines.append(line)
        if found >= 0:
            line += raw.count(b"\n")
    return lines


def _error_line(data: bytes, message: str) -> int:
    """The line of a JSON syntax error: from msgspec's "(byte N)", or the last line when the
    document was cut short."""
    found = _BYTE_OFFSET.search(message)
    if found:
        return data.count(b"\n", 0, int(found.group(1))) + 1
    if "truncated" in message:
        return data.rstrip().count(b"\n") + 1
    return 1
