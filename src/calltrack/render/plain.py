"""Plain text answers: one call (or entity row) per line, tab-separated, no header.

Fields are in the contract order, separated by a tab, each line ends with LF. Inside a value,
a backslash, tab, LF and CR are written ``\\\\``, ``\\t``, ``\\n``, ``\\r``: the text format of
PostgreSQL's COPY, which reads it back unchanged. Booleans are ``true``/``false``, arrays are
compact JSON text (escaped the same way). UTF-8, no byte order mark.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

from calltrack.render.rows import Cell, call_cells, row_cells, utf8

CONTENT_TYPE: Final = "text/plain; charset=utf-8"

_SPECIAL: Final = re.compile(r"[\\\t\n\r]")
_SPECIAL_BUT_TAB: Final = re.compile(r"[\\\n\r]")
_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def render_calls(bodies: Sequence[bytes], page: int) -> Iterator[bytes]:
    """The page's calls in the given order, one a line, ``page`` in the first field."""
    return _render(call_cells(bodies, page))


def render_rows(
    entity: str, fields: Sequence[str], rows: Iterable[Mapping[str, object]]
) -> Iterator[bytes]:
    """One line per entity row, values in ``fields`` order (``entity`` is not shown)."""
    del entity
    return _render(row_cells(fields, rows))


def escape(value: str) -> str:
    """``\\``, tab, LF and CR as ``\\\\``, ``\\t``, ``\\n``, ``\\r``; everything else as is."""
    return value.translate(_ESCAPES) if _SPECIAL.search(value) else value


def _render(batches: Iterable[list[list[Cell]]]) -> Iterator[bytes]:
    for batch in batches:
        lines = []
        for cells in batch:
            line = "\t".join([c if isinstance(c, str) else str(c) for c in cells])
            # Most lines need no escape: only our own tabs, no LF, CR or backslash.
            if line.count("\t") != len(cells) - 1 or _SPECIAL_BUT_TAB.search(line):
                line = "\t".join([escape(c) if isinstance(c, str) else str(c) for c in cells])
            lines.append(line)
        lines.append("")
        yield utf8("\n".join(lines))
