"""The resumable export: every call of a window into a file, page by page, in flat memory.

Files, for ``-o calls.csv``:

``calls.csv.part``
    The calls written so far. CSV and JSON Lines are written in their final format; XLSX
    and Parquet are spooled as JSON Lines and converted at the end.
``calls.csv.part.state``
    JSON, replaced atomically after each page is written and synced: the query, the next
    page, the calls written and the byte size of ``.part`` after them. ``resume`` cuts
    ``.part`` back to that size (dropping a page half written) and goes on at the next page.
``calls.csv``
    Appears, by rename, only when the export is complete.

A walk's ``to`` is fixed when it starts (``end=None`` becomes that moment), so its pages
should not move under it. Should they move anyway (pages shift forward when calls land in the
window mid-walk and the server's page marks are lost), two guards drop calls seen twice: the
ids of the last page, and a watermark (the last ``callTime`` written and the ids written at
that second). With ``since_last`` the watermark is kept in a state file between runs: each
run starts at it and the state moves on only when the run succeeded.

With ``since_last`` and a ``.jsonl`` or ``.parquet`` output, a server that offers API v4 is
read through its changes feed instead, and the output is merged (``calltrack.client.merge``);
a v3-only server (404 for the feed) gets the v3 windows above.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from calltrack.client._client import (
    Client,
    DateLike,
    Method,
    check_window,
    checked_segment,
    is_permanent,
)
from calltrack.client._errors import ExportError, FeedNotOffered
from calltrack.client._state import (
    PartState,
    Query,
    Watermark,
    holds_feed_cursor,
    load_part,
    load_since,
    save_atomic,
    save_since,
)
from calltrack.client.merge import MERGED, merge_changes
from calltrack.client.writers import (
    STREAMED,
    Format,
    document_writer,
    format_for,
    read_jsonl,
    require_extra,
    stream_writer,
)
from calltrack.model import CallRecord

log = logging.getLogger("calltrack.client")


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported after each page is safely written."""

    page: int
    pages: int
    calls: int
    skipped: int


@dataclass(frozen=True, slots=True)
class ExportResult:
    output: Path
    format: Format
    calls: int  # written to the file, over every run of a resumed export
    run_calls: int  # written by this run
    pages: int
    skipped: int  # seen before (``since_last``) or twice, not written again
    seconds: float  # this run
    resumed: bool
    last_call_time: str | None
    feed: bool = False  # merged from the v4 changes feed (then run_calls counts its changes)
    upserts: int = 0  # feed: calls new or changed, this run
    deletes: int = 0  # feed: calls deleted (or moved out of the window), this run


def export_calls(
    client: Client,
    output: Path,
    start: DateLike | None,
    end: DateLike | None = None,
    *,
    method: Method = "get",
    fmt: str | None = None,
    excel: bool = False,
    resume: bool = False,
    since_last: Path | None = None,
    on_page: Callable[[Progress], None] | None = None,
    on_convert: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> ExportResult:
    """Export every call of the window ``start``..``end`` to ``output``; see the module doc.

    ``start`` may be None only when ``since_last`` names a state file that exists. Dates are
    checked before the first request (ValueError for one that is no date, or a window whose
    start is after its end). An error that running again cannot fix (``is_permanent``: a
    documented v3 error, an answer outside the protocol) removes the partial files unless they
    hold pages of an earlier run; any other failure keeps them for ``resume=True``.
    ``on_page`` is called after each page is safely written; ``on_convert(done, total)`` while
    an XLSX or Parquet file is written from the spool at the end.
    """
    began = time.monotonic()
    kind = format_for(output, fmt)
    require_extra(kind)
    if excel and kind != "csv":
        raise ExportError("excel=True (--excel) applies to the csv format only")
    if since_last is not None and kind in MERGED:
        fed = holds_feed_cursor(since_last)
        if fed or not since_last.exists():
            try:
                return _merged(client, output, kind, start, end, method, since_last, on_page)
            except FeedNotOffered:
                if fed:
                    raise ExportError(
                        f"{since_last} holds a cursor of the v4 changes feed, which the server "
                        "no longer offers (HTTP 404): use another state file for v3 windows"
                    ) from None
                log.info("the server offers no v4 changes feed: v3 windows, appended")
    since = load_since(since_last, client, method) if since_last else None
    if since is not None:
        start_segment, watermark = since.start, since.watermark
    elif start is None:
        raise ExportError("a start date (--from) is needed: there is no --since-last state yet")
    else:
        start_segment, watermark = checked_segment(start, client.zone), None
    end_segment = checked_segment(end, client.zone) if end is not None else None
    if since is None:
        check_window(start_segment, end_segment, client.zone)

    part = output.with_name(output.name + ".part")
    state_path = part.with_name(part.name + ".state")
    wanted = Query(client.endpoint, method, start_segment, end_segment or "", kind, excel)
    state = load_part(state_path) if resume and state_path.exists() else None
    if state is not None:
        _check_resumable(state, wanted, end_segment is not None, part, output)
    else:
        if part.exists() or state_path.exists():
            log.warning("discarding the unfinished %s (pass --resume to continue it)", part.name)
        if end_segment is None:  # "now", fixed for the whole walk
            wanted = msgspec.structs.replace(wanted, end=str(int(clock())))
        state = PartState(query=wanted, watermark=watermark)
        with part.open("wb") as stream:
            stream_writer(_spool_format(kind), stream, excel=excel, header=True).close()
            state.offset = stream.tell()
        save_atomic(state_path, state)
    resumed = state.pages > 0 or state.walked
    calls_before = state.calls

    if not state.walked:
        try:
            _walk(client, part, state_path, state, on_page)
        except Exception as exc:
            if is_permanent(exc) and not resumed:
                # Running it again cannot finish this export: leave nothing half done. (The
                # files of an export resumed from an earlier run stay for a --resume.)
                part.unlink(missing_ok=True)
                state_path.unlink(missing_ok=True)
            raise
    _finish(part, output, kind, state.calls, on_convert)
    state_path.unlink(missing_ok=True)
    if since_last is not None:
        save_since(since_last, client, state)
    return ExportResult(
        output=output,
        format=kind,
        calls=state.calls,
        run_calls=state.calls - calls_before,
        pages=state.pages,
        skipped=state.skipped,
        seconds=time.monotonic() - began,
        resumed=resumed,
        last_call_time=state.watermark.call_time if state.watermark else None,
    )


def _merged(
    client: Client,
    output: Path,
    kind: Format,
    start: DateLike | None,
    end: DateLike | None,
    method: Method,
    since_last: Path,
    on_page: Callable[[Progress], None] | None,
) -> ExportResult:
    began = time.monotonic()

    def on_changes(count: int) -> None:
        if on_page is not None:
            on_page(Progress(page=0, pages=0, calls=count, skipped=0))

    counts = merge_changes(
        client,
        output,
        kind,
        start,
        end,
        method=method,
        since_last=since_last,
        on_changes=on_changes,
    )
    return ExportResult(
        output=output,
        format=kind,
        calls=counts.calls,
        run_calls=counts.changes,
        pages=0,
        skipped=0,
        seconds=time.monotonic() - began,
        resumed=False,
        last_call_time=None,
        feed=True,
        upserts=counts.upserts,
        deletes=counts.deletes,
    )


def _walk(
    client: Client,
    part: Path,
    state_path: Path,
    state: PartState,
    on_page: Callable[[Progress], None] | None,
) -> None:
    query = state.query
    with part.open("r+b") as stream:
        stream.truncate(state.offset)  # drops a page written after the last saved state
        stream.seek(state.offset)
        writer = stream_writer(_spool_format(query.format), stream, excel=query.excel, header=False)
        pages = client.iter_pages(
            query.start, query.end, method=query.method, first_page=state.next_page
        )
        for number, calls in pages:
            # A page that moved under the walk repeats calls of the page before it.
            kept = [
                call
                for call in calls
                if call.universalId not in state.last_page_ids and _admit(state, call)
            ]
            state.last_page_ids = {call.universalId for call in calls}
            writer.write(kept)
            stream.flush()
            os.fsync(stream.fileno())
            state.offset = stream.tell()
            state.next_page = number + 1
            state.pages += 1
            state.calls += len(kept)
            state.skipped += len(calls) - len(kept)
            save_atomic(state_path, state)
            if on_page is not None:
                on_page(Progress(number, state.pages, state.calls, state.skipped))
    state.walked = True
    save_atomic(state_path, state)


def _admit(state: PartState, call: CallRecord) -> bool:
    if state.watermark is None:
        state.watermark = Watermark(call.callTime, {call.universalId})
        return True
    return state.watermark.admit(call)


def _spool_format(kind: str) -> str:
    return kind if kind in STREAMED else "jsonl"


def _finish(
    part: Path,
    output: Path,
    kind: str,
    total: int,
    on_convert: Callable[[int, int], None] | None,
) -> None:
    """Make ``output`` the complete file: rename, or convert the spool and rename."""
    if not part.exists():
        if output.exists():
            return  # renamed already, by a run stopped just after it
        raise ExportError(f"{part} is missing: run without --resume to start over")
    if kind in STREAMED:
        os.replace(part, output)
        return
    converted = output.with_name(output.name + ".tmp")
    writer = document_writer(kind, converted)
    done = 0
    try:
        for batch in read_jsonl(part):
            writer.write(batch)
            done += len(batch)
            if on_convert is not None:
                on_convert(done, total)
    finally:
        writer.close()
    os.replace(converted, output)
    part.unlink()


def _check_resumable(
    state: PartState, wanted: Query, end_given: bool, part: Path, output: Path
) -> None:
    stored, asked = msgspec.to_builtins(state.query), msgspec.to_builtins(wanted)
    if not end_given:
        asked["to"] = stored["to"]
    differ = [name for name, value in stored.items() if asked.get(name) != value]
    if differ:
        names = ", ".join("server" if name == "endpoint" else name for name in differ)
        raise ExportError(
            f"the unfinished export in {part.name} has another {names}: "
            "run without --resume to start over"
        )
    finished_rename = state.walked and not part.exists() and output.exists()
    if not finished_rename and (not part.exists() or part.stat().st_size < state.offset):
        raise ExportError(
            f"{part.name} is missing or shorter than its state says: "
            "run without --resume to start over"
        )
