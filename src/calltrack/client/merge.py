"""``--since-last`` on the v4 changes feed: the output is a mirror, merged run after run.

A run reads the changes after the state's cursor (every current call, the first time), keeps
the latest change of each call in a spool on disk (a SQLite file beside the output, so memory
stays flat however many changes come), then writes the new output beside the old one:

- each call of the old output that changed is replaced where it stands (an upsert) or left out
  (a delete); the others are copied as they are (JSON Lines: the same bytes; Parquet: the same
  rows, batch by batch);
- the calls new to the output follow, in the order of their changes;

and renames it over the old output. Only then is the cursor saved. A run that fails or is
interrupted leaves the output and the state as they were; the next one starts from the same
cursor. Should the process stop between the rename and the saving of the state, the next run
applies the same changes again to an output that has them: upserts and deletes are
idempotent, so the result is the same.

The first run (no state yet) writes the output afresh from the feed's full walk. With
``--from``/``--to`` (kept in the state), only calls whose ``callTime`` is in that window are
kept: a call changed to a time outside it leaves the output.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from calltrack.client._client import (
    Client,
    DateLike,
    Method,
    Scope,
    _instant,
    check_window,
    checked_segment,
)
from calltrack.client._errors import CursorExpired, ExportError
from calltrack.client._state import FeedState, load_feed, save_feed
from calltrack.client.writers import Format, ParquetWriter
from calltrack.model import CallRecord, format_local

log = logging.getLogger("calltrack.client")

MERGED: Final[frozenset[str]] = frozenset({"jsonl", "parquet"})
BATCH: Final = 5000  # calls read, looked up and written at a time
_SPOOL_BATCH: Final = 1000  # changes written to the spool at a time
_encode = msgspec.json.Encoder().encode
_record_decoder: Final = msgspec.json.Decoder(CallRecord)


class _Id(msgspec.Struct):
    universalId: str = ""


_id_decoder: Final = msgspec.json.Decoder(_Id)


class MergeCounts(msgspec.Struct):
    changes: int = 0  # received from the feed this run
    upserts: int = 0
    deletes: int = 0
    calls: int = 0  # in the output once merged


def scope_of(method: Method) -> Scope | None:
    """The v4 scope that sees what a v3 method sees (a role key needs none)."""
    return "withRole" if method == "getWithRole" else None


def merge_changes(
    client: Client,
    output: Path,
    kind: Format,
    start: DateLike | None,
    end: DateLike | None,
    *,
    method: Method,
    since_last: Path,
    on_changes: Callable[[int], None] | None = None,
) -> MergeCounts:
    """Merge the changes since the state's cursor into ``output``; see the module doc.

    Raises ``FeedNotOffered`` before anything is written when the server has no feed (the
    caller falls back to v3), ``CursorExpired`` when the state's cursor is too old.
    """
    if kind not in MERGED:
        raise ExportError(
            f"--since-last on the v4 changes feed merges into .jsonl and .parquet outputs, "
            f"not {kind}"
        )
    state = load_feed(since_last, client, method)
    if state is None:
        low = checked_segment(start, client.zone) if start is not None else ""
        high = checked_segment(end, client.zone) if end is not None else ""
        if low and high:
            check_window(low, high, client.zone)
        state = FeedState(client.v4_endpoint, method, cursor="", start=low, end=high)
        existing = None  # the first run writes the output afresh
    else:
        existing = output if output.exists() else None
        if existing is None:
            log.warning(
                "%s does not exist: it gets only the changes since the last run "
                "(remove %s to export every call)",
                output,
                since_last,
            )
    window = _window(state.start, state.end, client)
    spool_path = output.with_name(output.name + ".changes.tmp")
    merged = output.with_name(output.name + ".tmp")
    counts = MergeCounts()
    spool = _Spool(spool_path)
    try:
        feed = client.changes(state.cursor or None, scope=scope_of(method))
        try:
            for change in feed:
                call = change.call
                if call is not None and window is not None and not window(call):
                    call = None  # moved out of the window: it leaves the output
                spool.add(change.universal_id, call)
                counts.changes += 1
                if call is None:
                    counts.deletes += 1
                else:
                    counts.upserts += 1
                if on_changes is not None and counts.changes % _SPOOL_BATCH == 0:
                    on_changes(counts.changes)
        except CursorExpired:
            raise CursorExpired(
                f"the cursor in {since_last} has expired (the server no longer keeps the "
                f"changes after it): remove {since_last} and run again; that run writes "
                f"{output} afresh with every call"
            ) from None
        spool.flush()
        if on_changes is not None:
            on_changes(counts.changes)
        if kind == "jsonl":
            counts.calls = _merge_jsonl(existing, spool, merged)
        else:
            counts.calls = _merge_parquet(existing, spool, merged)
        os.replace(merged, output)
    finally:
        spool.close()
        merged.unlink(missing_ok=True)
    if feed.cursor is not None:
        save_feed(since_last, msgspec.structs.replace(state, cursor=feed.cursor))
    return counts


def _window(low: str, high: str, client: Client) -> Callable[[CallRecord], bool] | None:
    """Whether a call's ``callTime`` is in ``low``..``high`` (time segments; "" is open)."""
    if not low and not high:
        return None
    zone = client.zone
    first = format_local(_instant(low, zone, end_of_day=False), zone) if low else ""
    last = format_local(_instant(high, zone, end_of_day=True), zone) if high else "~"
    return lambda call: first <= call.callTime <= last


class _Spool:
    """The latest change of each call, on disk: universalId -> (order, record or None)."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute(
            "CREATE TABLE changes (uid TEXT PRIMARY KEY, seq INTEGER NOT NULL, body BLOB, "
            "applied INTEGER NOT NULL DEFAULT 0)"
        )
        self._pending: list[tuple[str, int, bytes | None]] = []
        self._seq = 0

    def add(self, universal_id: str, call: CallRecord | None) -> None:
        self._seq += 1
        body = None if call is None else _encode(call)
        self._pending.append((universal_id, self._seq, body))
        if len(self._pending) >= _SPOOL_BATCH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO changes (uid, seq, body) VALUES (?, ?, ?) ON CONFLICT (uid) "
                    "DO UPDATE SET seq = excluded.seq, body = excluded.body",
                    self._pending,
                )
            self._pending = []

    def take(self, ids: list[str]) -> dict[str, bytes | None]:
        """The changes of these calls (record bytes, or None for a delete), marked applied."""
        found: dict[str, bytes | None] = {}
        wanted = list(dict.fromkeys(ids))
        for at in range(0, len(wanted), 500):
            chunk = wanted[at : at + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT uid, body FROM changes WHERE uid IN ({marks})",
                chunk,
            ).fetchall()
            found.update((uid, body) for uid, body in rows)
        if found:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "UPDATE changes SET applied = 1 WHERE uid = ?", [(uid,) for uid in found]
                )
        return found

    def new_calls(self) -> Iterator[list[bytes]]:
        """Batches of the records not applied to the old output, in the order of changes."""
        rows = self._db.execute(
            "SELECT body FROM changes WHERE applied = 0 AND body IS NOT NULL ORDER BY seq"
        )
        while batch := rows.fetchmany(BATCH):
            yield [body for (body,) in batch]

    def close(self) -> None:
        self._db.close()
        self.path.unlink(missing_ok=True)


def _merge_jsonl(existing: Path | None, spool: _Spool, merged: Path) -> int:
    written = 0
    with merged.open("wb") as out:
        if existing is not None:
            for lines in _line_batches(existing):
                ids = [_line_id(line, existing) for line in lines]
                changed = spool.take(ids)
                kept = []
                for uid, line in zip(ids, lines, strict=True):
                    if uid not in changed:
                        kept.append(line)
                    elif (body := changed[uid]) is not None:
                        kept.append(body + b"\n")
                out.write(b"".join(kept))
                written += len(kept)
        for bodies in spool.new_calls():
            out.write(b"".join(body + b"\n" for body in bodies))
            written += len(bodies)
        out.flush()
        os.fsync(out.fileno())
    return written


def _line_batches(path: Path) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    with path.open("rb") as lines:
        for line in lines:
            if not line.strip():
                continue
            batch.append(line if line.endswith(b"\n") else line + b"\n")
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _line_id(line: bytes, path: Path) -> str:
    try:
        return _id_decoder.decode(line).universalId
    except msgspec.DecodeError as exc:
        raise ExportError(
            f"{path} is not the JSON Lines of an export ({exc}): move it away, or use another -o"
        ) from None


def _merge_parquet(existing: Path | None, spool: _Spool, merged: Path) -> int:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    writer = ParquetWriter(merged)
    written = 0
    try:
        if existing is not None:
            try:
                old: Any = pq.ParquetFile(existing)
            except (OSError, pa.ArrowException) as exc:
                raise ExportError(
                    f"cannot read {existing} ({exc}): move it away, or use another -o"
                ) from None
            if not old.schema_arrow.equals(writer.schema):
                raise ExportError(
                    f"{existing} does not have the columns of a calltrack export: "
                    "move it away, or use another -o"
                )
            for batch in old.iter_batches(batch_size=BATCH):
                table = pa.Table.from_batches([batch], schema=writer.schema)
                ids: list[str] = table.column("universalId").to_pylist()
                changed = spool.take(ids)
                if changed:
                    table = _replaced(table, ids, changed, writer)
                writer.write_table(table)
                written += table.num_rows
        for bodies in spool.new_calls():
            writer.write([_record_decoder.decode(body) for body in bodies])
            written += len(bodies)
    finally:
        writer.close()
    return written


def _replaced(
    table: Any, ids: list[str], changed: dict[str, bytes | None], writer: ParquetWriter
) -> Any:
    """The rows of ``table`` with the changed calls replaced in place or left out."""
    import pyarrow as pa

    upserts = [uid for uid, body in changed.items() if body is not None]
    position = {uid: len(ids) + index for index, uid in enumerate(upserts)}
    fresh = writer.table([_record_decoder.decode(changed[uid] or b"") for uid in upserts])
    order = [
        index if uid not in changed else position[uid]
        for index, uid in enumerate(ids)
        if uid not in changed or changed[uid] is not None
    ]
    both = pa.concat_tables([table, fresh]) if upserts else table
    return both.take(pa.array(order, type=pa.int64()))
