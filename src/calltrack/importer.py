"""Read calls in the import format (JSON Lines or a JSON array) and load them into the store.

A file is loaded whole or not at all: every record is validated while it streams into one
store transaction, and the first bad record (named by its line) rolls the transaction back.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

import msgspec

from calltrack.errors import ImportRejected, InvalidRecord
from calltrack.model import StoredCall, decode_record, prepare
from calltrack.store import ImportResult, Store

_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, as spreadsheet tools write
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_BYTE_OFFSET = re.compile(r"\(byte (\d+)\)")


def import_file(store: Store, account_id: int, path: Path, zone: ZoneInfo) -> ImportResult:
    """Import one file into one account; ImportRejected names the first bad line.

    JSON Lines stream from the file, so a large import never sits in memory whole; a JSON
    array has to be read at once.
    """
    try:
        with path.open("rb") as file:
            head = file.read(4096)
            if head.startswith(_BOM):
                head = head[len(_BOM) :]
            if head.lstrip()[:1] == b"[":
                records = _array_records(head + file.read())
                return _load(store, account_id, records, zone)
            return _load(store, account_id, _numbered_lines(_lines(head, file)), zone)
    except OSError as exc:
        raise ImportRejected(0, f"cannot read {path}: {exc.strerror or exc}") from exc


def import_bytes(store: Store, account_id: int, data: bytes, zone: ZoneInfo) -> ImportResult:
    """Import a JSON Lines document or a JSON array of records, all or nothing."""
    return _load(store, account_id, _records(data), zone)


def _load(
    store: Store, account_id: int, records: Iterable[tuple[int, bytes]], zone: ZoneInfo
) -> ImportResult:
    # Validating in a second thread or in worker processes while the store writes was
    # measured and gave nothing here (bench/RESULTS.md): decoding holds the GIL, and handing
    # rendered calls between processes costs what it saves.
    return store.import_calls(account_id, _prepared(records, zone))


def _prepared(
    records: Iterable[tuple[int, bytes]], zone: ZoneInfo
) -> Iterator[tuple[int, StoredCall]]:
    seen: dict[str, int] = {}
    for line, raw in records:
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
    if data.startswith(_BOM):
        data = data[len(_BOM) :]  # a UTF-8 byte order mark, as spreadsheet tools write
    if data.lstrip()[:1] == b"[":
        return _array_records(data)
    return _numbered_lines(data.split(b"\n"))


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
