"""The peer: Datasette serving the same calls as a flat SQLite table.

One table per account, one column per field of the v3 record (booleans as 0/1, arrays as JSON
text), rows in page order so that ``rowid`` ranges are pages. Asked for
``/{db}/{table}.json?_shape=array&_size=1000&_next={rowid}``: a keyset page of 1000 rows as a
JSON array (the array shape skips Datasette's count and facets).

Build:  peer.build(calltrack_db, peer_db, {"n": account_id, ...})
Serve:  PEER_DB=peer.db python -m uvicorn peer:create_app --factory --app-dir bench --workers 2
(``datasette serve`` runs one process; uvicorn's workers give it the same worker count as ours.)
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from calltrack.model import CallRecord

COLUMNS = [name for name in msgspec.structs.fields(CallRecord) if name.name != "page"]
SETTINGS = {
    "max_returned_rows": 1000,  # default 100; our pages are 1000 calls
    "default_page_size": 1000,
    "sql_time_limit_ms": 10_000,  # never cut a page short
    "suggest_facets": False,
}


def _column_type(field: msgspec.structs.FieldInfo) -> str:
    kind = msgspec.inspect.type_info(field.type)
    if isinstance(kind, msgspec.inspect.UnionType):
        kind = next(t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType))
    if isinstance(kind, msgspec.inspect.IntType | msgspec.inspect.BoolType):
        return "INTEGER"
    return "TEXT"


def build(source: Path, target: Path, tables: dict[str, int]) -> None:
    """Flatten each account's calls (from calltrack's stored bodies) into a rowid table."""
    target.unlink(missing_ok=True)
    names = [field.name for field in COLUMNS]
    columns = ", ".join(f'"{f.name}" {_column_type(f)}' for f in COLUMNS)
    marks = ", ".join("?" * len(names))
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    encode = msgspec.json.encode
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        dst.execute("PRAGMA journal_mode = WAL")
        for table, account_id in tables.items():
            dst.execute(f"CREATE TABLE {table} ({columns})")
            insert = f"INSERT INTO {table} VALUES ({marks})"
            cursor = src.execute(
                "SELECT body FROM calls WHERE account_id = ? ORDER BY call_time, id", (account_id,)
            )
            dst.execute("BEGIN")
            while rows := cursor.fetchmany(10_000):
                batch = []
                for (body,) in rows:
                    record = decode(b"{" + body)
                    batch.append(
                        [
                            encode(value).decode() if isinstance(value, list) else value
                            for value in (record[name] for name in names)
                        ]
                    )
                dst.executemany(insert, batch)
            dst.execute("COMMIT")
    finally:
        src.close()
        dst.close()


def page_path(database: str, table: str) -> str:
    """The URL template of one page; ``{page}`` becomes the rowid before the page."""
    return f"/{database}/{table}.json?_shape=array&_size=1000&_next={{page}}"


def create_app() -> Any:
    """The Datasette ASGI app over ``$PEER_DB``, opened immutable (its fastest mode)."""
    from datasette.app import Datasette

    path = str(Path(os.environ["PEER_DB"]).resolve())
    return Datasette(immutables=[path], settings=SETTINGS).app()
