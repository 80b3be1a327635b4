"""What a handler gives back, and the writer that each format uses."""

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


class FormatWriter(Protocol):
    CONTENT_TYPE: str

    def render_calls(self, bodies: Sequence[bytes], page: int) -> Iterator[bytes]: ...

    def render_rows(
        self, entity: str, fields: Sequence[str], rows: Iterable[Mapping[str, object]]
    ) -> Iterator[bytes]: ...


_WRITERS: dict[str, ModuleType] = {"json": rows, "csv": csv, "xml": xml, "plain": plain}


def writer(format_name: str) -> FormatWriter:
    """The module that renders ``format_name`` (one of the served formats)."""
    return cast(FormatWriter, _WRITERS[format_name])
