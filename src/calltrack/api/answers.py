"""What a handler gives back, and the writers that each format uses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, cast

from calltrack.render import csv, plain, rows, xml


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: whole bytes (fast JSON pages, write results) or streamed chunks."""

    body: bytes | Iterator[bytes]
    content_type: str
    content_encoding: str = ""  # "gzip" once encoded


class RowWriter(Protocol):
    """A format's renderer of entity rows (every format has one)."""

    CONTENT_TYPE: str

    def render_rows(
        self, entity: str, fields: Sequence[str], rows: Iterable[Mapping[str, object]]
    ) -> Iterator[bytes]: ...


class CallWriter(RowWriter, Protocol):
    """A text format's renderer of a page of calls, streamed in chunks."""

    def render_calls(self, bodies: Sequence[bytes], page: int) -> Iterator[bytes]: ...


# A JSON page of calls is not here: it is one join of the stored bodies (render.json).
_CALL_WRITERS: dict[str, ModuleType] = {"csv": csv, "xml": xml, "plain": plain}
_ROW_WRITERS: dict[str, ModuleType] = {"json": rows, **_CALL_WRITERS}


def row_writer(format_name: str) -> RowWriter:
    """The module that renders entity rows in ``format_name`` (one of the served formats)."""
    return cast(RowWriter, _ROW_WRITERS[format_name])


def call_writer(format_name: str) -> CallWriter:
    """The module that renders calls in ``format_name`` (a served format other than json)."""
    return cast(CallWriter, _CALL_WRITERS[format_name])
