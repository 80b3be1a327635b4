"""Output formats: CSV, JSON Lines, XLSX and Parquet writers with one small interface.

Every writer has ``write(calls)`` (one batch, in order) and ``close()``. Columns are the
record's fields in the contract's order; each column's kind (int, bool, text, date-time,
array) is read from ``CallRecord``'s annotations, so the formats follow the model.

CSV and JSON Lines write to a binary stream the caller owns and can append to (which is how
an export resumes); XLSX and Parquet own their file and are written in one go.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol

import msgspec
import msgspec.inspect as mi

from calltrack.client._errors import ExportError, MissingExtra
from calltrack.model import DATETIME_PATTERN, FIELD_NAMES, CallRecord

Format = Literal["csv", "jsonl", "xlsx", "parquet"]
FORMATS: Final[tuple[Format, ...]] = ("csv", "jsonl", "xlsx", "parquet")
EXTENSIONS: Final[dict[str, Format]] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xlsx": "xlsx",
    ".parquet": "parquet",
}
# format -> (extra to install, module it needs)
EXTRAS: Final[dict[str, tuple[str, str]]] = {
    "xlsx": ("xlsx", "xlsxwriter"),
    "parquet": ("parquet", "pyarrow"),
}
STREAMED: Final[frozenset[str]] = frozenset({"csv", "jsonl"})

Kind = Literal["int", "bool", "text", "free_text", "datetime", "ints", "texts", "hooks"]


class Writer(Protocol):
    """What every format offers: append a batch of calls, then close."""

    def write(self, calls: Sequence[CallRecord]) -> None: ...

    def close(self) -> None: ...


def _kind(field: mi.Field) -> Kind:
    t = field.type
    if isinstance(t, mi.IntType):
        return "int"
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.StrType):
        if t.pattern == DATETIME_PATTERN:
            return "datetime"
        return "text" if t.pattern else "free_text"
    if isinstance(t, mi.ListType):
        item = t.item_type
        if isinstance(item, mi.IntType):
            return "ints"
        return "texts" if isinstance(item, mi.StrType) else "hooks"
    return "text"  # literals (enums), optional or not


_info = mi.type_info(CallRecord)
assert isinstance(_info, mi.StructType)
COLUMNS: Final[tuple[tuple[str, Kind], ...]] = tuple((f.name, _kind(f)) for f in _info.fields)
assert tuple(name for name, _ in COLUMNS) == FIELD_NAMES


def format_for(path: Path, fmt: str | None = None) -> Format:
    """The output format: ``fmt`` when given, else from the file's extension."""
    if fmt is not None:
        for known in FORMATS:
            if fmt == known:
                return known
        raise ExportError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise ExportError(
            f"cannot tell the format of {path.name!r} from its extension: "
            f"use --format {'|'.join(FORMATS)}"
        )
    return found


def require_extra(fmt: str) -> None:
    """Raise MissingExtra, naming the extra to install, if ``fmt`` needs an absent package."""
    if fmt in EXTRAS:
        extra, module = EXTRAS[fmt]
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(fmt, extra, module)


# -- streamed formats ------------------------------------------------------------------------


class JsonlWriter:
    """One call per line, each exactly as ``msgspec.json.encode`` renders the record."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._encoder = msgspec.json.Encoder()

    def write(self, calls: Sequence[CallRecord]) -> None:
        if calls:
            self._stream.write(self._encoder.encode_lines(calls))

    def close(self) -> None:
        self._stream.flush()


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(kind: Kind, excel: bool) -> Callable[[Any], str]:
    if kind == "int":
        return str
    if kind == "bool":
        return lambda value: "true" if value else "false"
    if kind in {"ints", "texts", "hooks"}:
        return lambda value: msgspec.json.encode(value).decode()
    if kind == "free_text" and excel:
        # Free text comes from visitors (utm_*, referrer...): never let Excel run it.
        return lambda value: "'" + value if value.startswith(_FORMULA_START) else value
    return lambda value: value or ""


class CsvWriter:
    """A header row, then one row per call; arrays as JSON text, booleans as true/false.

    ``excel=True`` writes a UTF-8 byte order mark and ``;`` separators, and quotes free-text
    cells that Excel would take for a formula with a leading ``'``.
    """

    def __init__(self, stream: IO[bytes], *, excel: bool = False, header: bool = True) -> None:
        self._stream = stream
        self._delimiter = ";" if excel else ","
        self._cells = [_csv_cell(kind, excel) for _, kind in COLUMNS]
        if header:
            stream.write((b"\xef\xbb\xbf" if excel else b"") + self._rows([list(FIELD_NAMES)]))

    def _rows(self, rows: Sequence[Sequence[str]]) -> bytes:
        text = io.StringIO()
        csv.writer(text, delimiter=self._delimiter, lineterminator="\r\n").writerows(rows)
        return text.getvalue().encode("utf-8")

    def write(self, calls: Sequence[CallRecord]) -> None:
        cells = self._cells
        rows = [
            [cell(value) for cell, value in zip(cells, msgspec.structs.astuple(call), strict=True)]
            for call in calls
        ]
        self._stream.write(self._rows(rows))

    def close(self) -> None:
        self._stream.flush()


# -- documents ---------------------------------------------------------------------------------

XLSX_MAX_ROWS: Final = 1_048_576
_EXACT_IN_EXCEL: Final = 2**53  # Excel numbers are doubles


class XlsxWriter:
    """An Excel workbook with real cell types, written in constant memory.

    Numbers are numbers, booleans booleans, date-times dates (service time zone, as the API
    gives them), arrays JSON text. Past Excel's row limit the calls go on in a new sheet.
    """

    def __init__(self, path: Path, *, max_rows: int = XLSX_MAX_ROWS) -> None:
        require_extra("xlsx")
        import xlsxwriter  # type: ignore[import-untyped]

        self._book: Any = xlsxwriter.Workbook(
            str(path), {"constant_memory": True, "strings_to_numbers": False}
        )
        self._date = self._book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self._bold = self._book.add_format({"bold": True})
        self._max_rows = max_rows
        self._sheets = 0
        self._sheet: Any = None
        self._row = max_rows

    def _new_sheet(self) -> None:
        self._sheets += 1
        name = "calls" if self._sheets == 1 else f"calls ({self._sheets})"
        self._sheet = self._book.add_worksheet(name)
        for column, (_, kind) in enumerate(COLUMNS):
            if kind == "datetime":
                self._sheet.set_column(column, column, 19)
        self._sheet.write_row(0, 0, FIELD_NAMES, self._bold)
        self._sheet.freeze_panes(1, 0)
        self._row = 1

    def write(self, calls: Sequence[CallRecord]) -> None:
        for call in calls:
            if self._row >= self._max_rows:
                self._new_sheet()
            sheet, row = self._sheet, self._row
            values = msgspec.structs.astuple(call)
            for column, ((_, kind), value) in enumerate(zip(COLUMNS, values, strict=True)):
                if kind == "int":
                    if value < _EXACT_IN_EXCEL:
                        sheet.write_number(row, column, value)
                    else:
                        sheet.write_string(row, column, str(value))
                elif kind == "bool":
                    sheet.write_boolean(row, column, value)
                elif kind == "datetime":
                    if value:
                        sheet.write_datetime(row, column, datetime.fromisoformat(value), self._date)
                elif kind in {"ints", "texts", "hooks"}:
                    sheet.write_string(row, column, msgspec.json.encode(value).decode())
                elif value:
                    sheet.write_string(row, column, value)
            self._row += 1

    def close(self) -> None:
        if self._sheet is None:
            self._new_sheet()  # an export of no calls is a sheet with its header
        self._book.close()


class ParquetWriter:
    """A Parquet file with real column types: int64, bool, string, timestamp[ms], lists.

    Date-times are naive timestamps holding the API's wall-clock values (``callTime`` in the
    service time zone, ``localDate`` in the caller's); empty ones are null. ``hooks`` is a
    list of structs. Each ``write`` is one row group.
    """

    def __init__(self, path: Path) -> None:
        require_extra("parquet")
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        hook = pa.struct(
            [
                ("hookEventName", pa.string()),
                ("hookAddress", pa.string()),
                ("hookMethod", pa.string()),
                ("hookResponseStatus", pa.int64()),
            ]
        )
        types = {
            "int": pa.int64(),
            "bool": pa.bool_(),
            "text": pa.string(),
            "free_text": pa.string(),
            "datetime": pa.timestamp("ms"),
            "ints": pa.list_(pa.int64()),
            "texts": pa.list_(pa.string()),
            "hooks": pa.list_(hook),
        }
        self._pa: Any = pa
        self._schema: Any = pa.schema(
            [pa.field(name, types[kind], nullable=kind == "datetime") for name, kind in COLUMNS]
        )
        self._file: Any = pq.ParquetWriter(str(path), self._schema, compression="zstd")

    @property
    def schema(self) -> Any:
        """The file's ``pyarrow.Schema``."""
        return self._schema

    def write(self, calls: Sequence[CallRecord]) -> None:
        if calls:
            self._file.write_table(self.table(calls))

    def write_table(self, table: Any) -> None:
        """A ``pyarrow.Table`` of this schema (rows of a file this writer wrote) as a row group."""
        if table.num_rows:
            self._file.write_table(table)

    def table(self, calls: Sequence[CallRecord]) -> Any:
        """The calls as a ``pyarrow.Table`` of this file's schema."""
        columns = list(zip(*(msgspec.structs.astuple(call) for call in calls), strict=True))
        if not columns:
            return self._schema.empty_table()
        arrays = []
        for (_, kind), values, field in zip(COLUMNS, columns, self._schema, strict=True):
            data: Sequence[Any] = values
            if kind == "datetime":
                data = [datetime.fromisoformat(v) if v else None for v in values]
            elif kind == "hooks":
                data = [[msgspec.structs.asdict(h) for h in hooks] for hooks in values]
            elif kind == "text":
                data = [v or "" for v in values]  # an optional enum is never None from the API
            arrays.append(self._pa.array(data, type=field.type))
        return self._pa.Table.from_arrays(arrays, schema=self._schema)

    def close(self) -> None:
        self._file.close()


def document_writer(fmt: str, path: Path) -> Writer:
    """The writer of a format that owns its file (xlsx, parquet)."""
    if fmt == "xlsx":
        return XlsxWriter(path)
    if fmt == "parquet":
        return ParquetWriter(path)
    raise ValueError(f"{fmt} is a streamed format")


def stream_writer(fmt: str, stream: IO[bytes], *, excel: bool, header: bool) -> Writer:
    """The writer of a format appended to a stream (csv, jsonl)."""
    if fmt == "csv":
        return CsvWriter(stream, excel=excel, header=header)
    if fmt == "jsonl":
        return JsonlWriter(stream)
    raise ValueError(f"{fmt} is not a streamed format")


_line_decoder: Final = msgspec.json.Decoder(CallRecord)


def read_jsonl(path: Path, batch: int = 5000) -> Iterator[list[CallRecord]]:
    """Batches of the calls of a JSON Lines file, reading one line at a time."""
    chunk: list[CallRecord] = []
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                chunk.append(_line_decoder.decode(line))
                if len(chunk) >= batch:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk
