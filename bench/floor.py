"""The floor: the least a server can do to answer a page of calls.

A raw ASGI app that reads 1000 pre-rendered call bodies from SQLite by a rowid range and writes
``[`` + the joined calls + ``]``: no routing framework, no parsing, no auth, no checks. Its answer
is byte for byte calltrack's page (same bodies, same page stamp), so the two move the same bytes.

Build:  floor.build(calltrack_db, floor_db, {"n": account_id, ...})
Serve:  FLOOR_DB=floor.db FLOOR_PRAGMAS=$(calltrack_pragmas) python -m uvicorn floor:app \
        --app-dir bench --workers 2 ...
GET /{table}/{page} -> page ``page`` of that table; 404 past the last page.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

PAGE_SIZE = int(os.environ.get("FLOOR_PAGE_SIZE", "1000"))
_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]
_conn: sqlite3.Connection | None = None
_queries: dict[str, str] = {}


def build(source: Path, target: Path, tables: dict[str, int]) -> None:
    """One table per account: the calltrack bodies of its calls, rowid 1.. in page order."""
    target.unlink(missing_ok=True)
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{source}?mode=ro",))
        for table, account_id in tables.items():
            conn.execute(f"CREATE TABLE {table} (pos INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            conn.execute(
                f"INSERT INTO {table} (body) SELECT body FROM src.calls "
                "WHERE account_id = ? ORDER BY call_time, id",
                (account_id,),
            )
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()


def calltrack_pragmas(database: Path) -> str:
    """calltrack's own SQLite cache settings, read from a connection its store opens, as
    ``cache_size=...,mmap_size=...`` for ``$FLOOR_PRAGMAS``: the floor reads with the same."""
    from calltrack.config import Settings
    from calltrack.store.sqlite import SqliteStore

    store = SqliteStore(Settings(database_url=f"sqlite:///{database}"))
    try:
        with store._connect() as conn:
            values = {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in _PRAGMAS}
    finally:
        store.close()
    return ",".join(f"{name}={value}" for name, value in values.items())


_PRAGMAS = ("cache_size", "mmap_size")


def _connection() -> sqlite3.Connection:
    global _conn
    if _conn is None:
        path = Path(os.environ["FLOOR_DB"]).resolve()
        _conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        for setting in os.environ.get("FLOOR_PRAGMAS", "").split(","):
            name, _, value = setting.partition("=")
            if name in _PRAGMAS and value.lstrip("-").isdigit():
                _conn.execute(f"PRAGMA {name} = {int(value)}")
    return _conn


def read_page(table: str, page: int) -> bytes | None:
    sql = _queries.get(table)
    if sql is None:
        if not table.isidentifier():
            return None
        sql = _queries[table] = f"SELECT body FROM {table} WHERE pos > ? AND pos <= ? ORDER BY pos"
    first = page * PAGE_SIZE
    try:
        rows = _connection().execute(sql, (first, first + PAGE_SIZE)).fetchall()
    except sqlite3.OperationalError:
        return None
    if not rows:
        return None
    # One join over [head, body, separator, body, ..., "]"]: a single copy of the page. (Joining
    # the bodies first and then wrapping them copies the page twice, and the second large
    # allocation costs ~1.7 ms per page here in page faults.)
    prefix = b'{"page":%d,' % page
    parts = [b"," + prefix] * (2 * len(rows) + 1)
    parts[0] = b"[" + prefix
    parts[1::2] = [row[0] for row in rows]
    parts[-1] = b"]"
    return b"".join(parts)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    _, _, rest = scope["path"].partition("/")
    table, _, page = rest.partition("/")
    body = read_page(table, int(page)) if page.isdigit() else None
    status, body = (200, body) if body is not None else (404, b"")
    headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
