"""Pure SQL builders for reading one page of calls, shared by both backends.

A page is a range of the window's order (``call_time, id``): it starts just after the last
call of the previous page and, once a reader has fixed it, ends at a remembered call. Ranges
are read by key; only a page whose start is not yet known is found by OFFSET from the nearest
known start. Each owner gets its own index-ordered subquery so a scope of several accounts
never sorts their whole history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Window:
    """Inclusive bounds in unix seconds; ``end`` None means "until now"."""

    start: int
    end: int | None


@dataclass(frozen=True, slots=True)
class Boundary:
    """A position in page order: just after, or up to and including, (call_time, id)."""

    call_time: int
    id: int


# What a page query returns per row: the page key and the stored body, the key only (to find
# where a page ends), or the body only (the page's end is known already).
Columns = Literal["key_body", "key", "body"]
_SELECTED: dict[Columns, tuple[str, ...]] = {
    "key_body": ("call_time", "id", "body"),
    "key": ("call_time", "id"),
    "body": ("body",),
}


def mark_key(owner_ids: Sequence[int], window: Window, page_size: int) -> str:
    """Identity of a (scope, window, page size) walk, under which its page layout is kept."""
    end = "open" if window.end is None else str(window.end)
    text = ",".join(map(str, sorted(owner_ids))) + f"|{window.start}|{end}|{page_size}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def build_page_query(
    owner_ids: Sequence[int],
    start: int,
    end: int,
    after: Boundary | None,
    until: Boundary | None,
    skip: int,
    limit: int | None,
    columns: Columns = "key_body",
) -> tuple[str, list[int]]:
    """SQL (``?`` placeholders) and parameters selecting ``columns`` of the owners' calls with
    ``start <= call_time <= end``, after ``after`` and up to ``until`` (both optional), in
    ``call_time, id`` order, skipping ``skip`` rows and returning at most ``limit`` (None: all
    of the range, which ``until`` then bounds).
    """
    if not owner_ids:
        raise ValueError("a page query needs at least one owner")
    selected = _SELECTED[columns]
    lower = start if after is None else max(start, after.call_time)
    upper = end if until is None else min(end, until.call_time)
    where = "account_id = ? AND call_time BETWEEN ? AND ?"
    params: list[int] = [lower, upper]
    if after is not None:
        # With call_time >= after.call_time already implied by the range, this is the
        # row-value comparison (call_time, id) > after in an index-friendly form.
        where += " AND (call_time > ? OR id > ?)"
        params += [after.call_time, after.id]
    if until is not None:
        where += " AND (call_time < ? OR id <= ?)"  # (call_time, id) <= until, likewise
        params += [until.call_time, until.id]
    order = "ORDER BY call_time, id"
    limits = "" if limit is None else " LIMIT ?"
    tail = [] if limit is None else [limit]
    if skip:
        limits += " OFFSET ?"
        tail.append(skip)
    if len(owner_ids) == 1:
        sql = f"SELECT {', '.join(selected)} FROM calls WHERE {where} {order}{limits}"
        return sql, [owner_ids[0], *params, *tail]
    # Merge the owners' keys first, then fetch the bodies of the page's rows only: sorting
    # bodies would copy every candidate row.
    inner_limit = "" if limit is None else " LIMIT ?"
    parts: list[str] = []
    all_params: list[int] = []
    for index, owner in enumerate(owner_ids):
        parts.append(
            f"SELECT account_id, call_time, id FROM (SELECT account_id, call_time, id "
            f"FROM calls WHERE {where} {order}{inner_limit}) AS s{index}"
        )
        # each owner may supply every row up to the end of the page: skip + limit
        all_params += [owner, *params] + ([] if limit is None else [skip + limit])
    keys = " UNION ALL ".join(parts) + f" {order}{limits}"
    if columns == "key":
        return f"SELECT call_time, id FROM ({keys}) AS k {order}", [*all_params, *tail]
    # Joined on the full page key: the primary key of SQLite's clustered calls table.
    sql = (
        f"SELECT {', '.join(f'c.{name}' for name in selected)} "
        f"FROM ({keys}) AS k JOIN calls AS c "
        "ON c.account_id = k.account_id AND c.call_time = k.call_time AND c.id = k.id "
        "ORDER BY k.call_time, k.id"
    )
    return sql, [*all_params, *tail]
