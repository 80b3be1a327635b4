"""CSV answers (RFC 4180): a header row of field names, then one row per call or entity row.

Fields are quoted only when needed (a comma, a double quote, CR or LF inside), a double quote
inside is doubled, every row ends with CRLF, the text is UTF-8 without a byte order mark.
Booleans are ``true``/``false``, integers are digits, arrays are compact JSON text. Values are
never altered otherwise: no protection against spreadsheet formulas (see ``docs/formats.md``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

from calltrack.model import FIELD_NAMES
from calltrack.render.rows import Cell, call_cells, row_cells, utf8

CONTENT_TYPE: Final = "text/csv; charset=utf-8"


def render_calls(bodies: Sequence[bytes], page: int) -> Iterator[bytes]:
    """The header, then the page's calls in the given order, ``page`` in the first column."""
    return _render(FIELD_NAMES, call_cells(bodies, page))


def render_rows(
    entity: str, fields: Sequence[str], rows: Iterable[Mapping[str, object]]
) -> Iterator[bytes]:
    """The header ``fields``, then one row per entity row (``entity`` is not shown)."""
    del entity
    return _render(fields, row_cells(fields, rows))


def _render(header: Sequence[str], batches: Iterable[list[list[Cell]]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # excel dialect: ',' '"' QUOTE_MINIMAL
    writer.writerow(header)
    for batch in batches:
        writer.writerows(batch)
        yield _drain(buffer)
    if buffer.tell():  # no rows: the header alone
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> bytes:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return utf8(text)
