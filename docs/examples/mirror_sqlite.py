#!/usr/bin/env python3
"""Mirror every call an API key sees into a local SQLite table, with API v4's changes feed.

    export CALLTRACK_API_KEY=0123456789abcdef
    python mirror_sqlite.py --url https://calls.example.com --db calls.db

Run it as often as you like (from cron, in a loop): each run applies what changed since the
last one and stops when the feed has nothing more. The table ``calls`` holds one row per call
(``universal_id`` primary key, the record as JSON, its ``call_time`` and when it last
``changed_at``); the table ``mirror_state`` holds the feed's cursor. Each page of changes is
applied in ONE transaction together with the cursor after it, so the mirror and its cursor
never disagree: a run killed at any moment resumes exactly where the last committed page
ended, and no change is applied twice or skipped.

Only ``httpx2`` (a dependency of calltrack) and the standard library are used. See
docs/api-v4.md, "Mirroring calls into SQLite".
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import sqlite3
import sys
import time
from typing import Any

import httpx2

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    universal_id TEXT PRIMARY KEY,
    record       TEXT NOT NULL,  -- the call as JSON: the v3 record without "page"
    call_time    TEXT NOT NULL,  -- callTime, 'YYYY-MM-DD HH:MM:SS' in the service time zone
    changed_at   TEXT NOT NULL   -- when the server last changed the call, same format
);
CREATE INDEX IF NOT EXISTS calls_call_time ON calls (call_time);
CREATE TABLE IF NOT EXISTS mirror_state (
    name  TEXT PRIMARY KEY,      -- 'cursor', 'source'
    value TEXT NOT NULL
);
"""
RETRIES = 8


class CursorExpired(Exception):
    """410: the server no longer keeps the changes after our cursor."""


def fetch_page(http: httpx2.Client, url: str, key: str, params: dict[str, str]) -> Any:
    """One page of changes; 429/5xx and network failures are retried, waiting what
    Retry-After asks or an exponential backoff."""
    for attempt in range(RETRIES + 1):
        wait = min(60.0, 0.5 * 2**attempt)
        try:
            response = http.get(url, params=params, headers={"authorization": f"Bearer {key}"})
        except httpx2.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            status = response.status_code
            if status == 200:
                try:
                    return response.json()
                except ValueError:  # cut short: ask again
                    problem = "the answer ended early"
            elif status == 410:
                raise CursorExpired
            elif status == 429 or status >= 500:
                problem = f"HTTP {status}"
                wait = max(wait, retry_after(response.headers.get("retry-after")))
            else:  # 400, 401: retrying cannot help
                detail = response.text
                if "json" in response.headers.get("content-type", ""):
                    detail = response.json().get("detail", detail)
                sys.exit(f"error: HTTP {status} from {url}: {detail}")
        if attempt == RETRIES:
            sys.exit(f"error: {url}: {problem}, still after {RETRIES} retries")
        print(f"warning: {problem}; retrying in {wait:.1f} s", file=sys.stderr)
        time.sleep(wait)
    raise AssertionError("unreachable")


def retry_after(value: str | None) -> float:
    """Seconds asked by a Retry-After header (a number or an HTTP date); 0 without one."""
    if not value:
        return 0.0
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


def apply_page(db: sqlite3.Connection, page: Any, *, start_over: bool) -> tuple[int, int]:
    """The page's upserts and deletes and the cursor after them, in one transaction."""
    upserts = deletes = 0
    with db:  # BEGIN ... COMMIT (ROLLBACK on an exception)
        if start_over:  # the first page of a walk from the beginning replaces everything
            db.execute("DELETE FROM calls")
        for change in page["changes"]:
            if change["op"] == "upsert":
                call = change["call"]
                db.execute(
                    "INSERT INTO calls (universal_id, record, call_time, changed_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (universal_id) DO UPDATE SET "
                    "record = excluded.record, call_time = excluded.call_time, "
                    "changed_at = excluded.changed_at",
                    (
                        change["universalId"],
                        json.dumps(call, ensure_ascii=False, separators=(",", ":")),
                        call["callTime"],
                        change["changedAt"],
                    ),
                )
                upserts += 1
            else:
                db.execute("DELETE FROM calls WHERE universal_id = ?", (change["universalId"],))
                deletes += 1
        db.execute(
            "INSERT INTO mirror_state (name, value) VALUES ('cursor', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (page["next"],),
        )
    return upserts, deletes


def mirror(
    base_url: str, key: str, path: str, scope: str | None = None, page_size: int = 1000
) -> tuple[int, int]:
    """Bring the mirror at ``path`` up to date; (upserts, deletes) applied."""
    url = base_url.rstrip("/") + "/api/v4/calls/changes"
    source = f"{url} scope={scope or 'own'}"
    db = sqlite3.connect(path, isolation_level=None)  # transactions only where we say
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(SCHEMA)
    db.isolation_level = "DEFERRED"  # `with db:` now opens a transaction
    state = dict(db.execute("SELECT name, value FROM mirror_state").fetchall())
    if state.get("source", source) != source:
        sys.exit(f"error: {path} mirrors {state['source']}, not {source}")
    with db:
        db.execute(
            "INSERT OR REPLACE INTO mirror_state (name, value) VALUES ('source', ?)", (source,)
        )
    cursor: str | None = state.get("cursor")
    upserts = deletes = 0
    with httpx2.Client(timeout=60.0, follow_redirects=True) as http:
        while True:
            params = {"limit": str(page_size)}
            if cursor is not None:
                params["after"] = cursor
            if scope is not None:
                params["scope"] = scope
            try:
                page = fetch_page(http, url, key, params)
            except CursorExpired:
                # Deletes after our cursor are gone from the server: a full walk from the
                # beginning (its first page clears the table) is the only exact mirror.
                print("warning: the cursor expired (410): mirroring afresh", file=sys.stderr)
                cursor = None
                continue
            added, removed = apply_page(db, page, start_over=cursor is None)
            upserts, deletes = upserts + added, deletes + removed
            cursor = page["next"]
            if not page["hasMore"]:
                break
    db.close()
    return upserts, deletes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="the server, e.g. https://calls.example.com")
    parser.add_argument("--db", required=True, help="the SQLite file of the mirror")
    parser.add_argument("--scope", choices=("own", "withRole"), help="default: own")
    parser.add_argument(
        "--page-size", type=int, default=1000, help="changes a request (1-10000; default 1000)"
    )
    args = parser.parse_args()
    key = os.environ.get("CALLTRACK_API_KEY")
    if not key:
        sys.exit("error: set CALLTRACK_API_KEY (the key never goes on the command line)")
    upserts, deletes = mirror(args.url, key, args.db, args.scope, args.page_size)
    print(f"mirrored {upserts} upserts and {deletes} deletes into {args.db}")


if __name__ == "__main__":
    main()
