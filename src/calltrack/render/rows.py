"""JSON entity rows, and the row values the text formats (csv, xml, plain) start from.

Every format renders a list of entity rows, and the text formats a page of calls from the stored
bodies (a JSON page of calls is ``render.json.render_page``, one join of the bodies); this module
owns what they share: decoding the bodies into value lists in the contract order, batching for
streaming, cells as text, and UTF-8 output. The shapes are in ``docs/formats.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, cast

import msgspec

from calltrack.iters import batched
from calltrack.model import FIELD_NAMES, CallRecord
from calltrack.render import json

CONTENT_TYPE: Final = json.CONTENT_TYPE

# Records per streamed chunk: a chunk is a few hundred KB at most, the page is never joined.
CHUNK_ROWS: Final = 100

_decoder = msgspec.json.Decoder(CallRecord)
_encoder = msgspec.json.Encoder()
# The model's defaults are its empty values, so they tell each column's kind.
_EMPTY: Final = msgspec.structs.astuple(CallRecord())
BOOL_COLUMNS: Final = tuple(i for i, v in enumerate(_EMPTY) if isinstance(v, bool))
ARRAY_COLUMNS: Final = tuple(i for i, v in enumerate(_EMPTY) if isinstance(v, list))
STR_COLUMNS: Final = tuple(i for i, v in enumerate(_EMPTY) if not isinstance(v, int | list))
assert FIELD_NAMES[0] == "page"

_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")

Cell = str | int


def call_values(bodies: Sequence[bytes], page: int) -> Iterator[list[list[object]]]:
    """The calls of stored ``bodies`` as value lists in ``FIELD_NAMES`` order, ``page`` first.

    Values are as ``CallRecord`` holds them: str, int, bool, list[int], list[str], list[Hook].
    """
    decode, astuple = _decoder.decode, msgspec.structs.astuple
    for chunk in batched(bodies, CHUNK_ROWS):
        batch: list[list[object]] = []
        for body in chunk:
            values: list[object] = list(astuple(decode(b"{" + body)))
            values[0] = page
            batch.append(values)
        yield batch


def call_cells(bodies: Sequence[bytes], page: int) -> Iterator[list[list[Cell]]]:
    """Like ``call_values``, with booleans as ``true``/``false`` and arrays as JSON text."""
    for batch in call_values(bodies, page):
        for values in batch:
            for i in BOOL_COLUMNS:
                values[i] = "true" if values[i] else "false"
            for i in ARRAY_COLUMNS:
                values[i] = json_text(values[i])
        yield cast("list[list[Cell]]", batch)  # every value is now str or int


def row_cells(
    fields: Sequence[str], rows: Iterable[Mapping[str, object]]
) -> Iterator[list[list[Cell]]]:
    """Entity rows as cell lists in ``fields`` order, in batches."""
    for batch in batched(rows, CHUNK_ROWS):
        yield [[cell(row[name]) for name in fields] for row in batch]


def cell(value: object) -> Cell:
    """One value as a text-format cell: bool as ``true``/``false``, arrays as JSON text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return value
    return json_text(value)


def json_text(value: object) -> str:
    """Compact JSON, non-ASCII as is (as in the JSON answer); lone surrogates become U+FFFD."""
    try:
        return _encoder.encode(value).decode()
    except UnicodeEncodeError:
        return _encoder.encode(_clean(value)).decode()


def utf8(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate (never in stored JSON) becomes U+FFFD."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text).encode()


def _clean(value: object) -> object:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, msgspec.Struct):
        return _clean(msgspec.structs.asdict(value))
    return value


def render_rows(
    entity: str, fields: Sequence[str], rows: Iterable[Mapping[str, object]]
) -> Iterator[bytes]:
    """A JSON array of objects with exactly ``fields``, in that order (``entity`` is not shown).

    Non-ASCII as is; a lone surrogate becomes U+FFFD. A row without one of ``fields`` is the
    caller's error (KeyError); keys not in ``fields`` are left out.
    """
    del entity  # the JSON shape does not name the entity
    lead = b"["
    for batch in batched(rows, CHUNK_ROWS):
        objects = [{name: row[name] for name in fields} for row in batch]
        try:
            body = _encoder.encode(objects)
        except UnicodeEncodeError:
            body = _encoder.encode(_clean(objects))
        yield lead + body[1:-1]
        lead = b","
    yield b"[]" if lead == b"[" else b"]"
