"""The v4 routes: the changes feed, calls with filters, one call, stats, the OpenAPI document.

Every handler checks the key first (401), then its parameters (400 naming the bad one),
then reads the store in a worker thread. Errors are problem+json (``problems``); a streamed NDJSON
answer that fails midway ends without its last line, which is how a client knows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from calltrack.api.v4 import feed
from calltrack.api.v4.access import Caller, authorize, bearer_key
from calltrack.api.v4.cursor import BadCursor, FeedCursor, decode
from calltrack.api.v4.openapi import document
from calltrack.api.v4.problems import Problem, bad_parameter, not_found, unavailable
from calltrack.errors import StoreUnavailable
from calltrack.model import FIELD_NAMES
from calltrack.store.changes import GROUP_COLUMNS, QUARTER_HOUR, CallFilter, StatsRow

JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"
FEED_LIMIT: Final = (1000, 10_000, 100_000)  # default, largest in JSON, largest in NDJSON
CALLS_LIMIT: Final = (100, 1000, 100_000)
STREAM_BATCH: Final = 1000
BY_NAMES: Final = ("day", "hour", *GROUP_COLUMNS)
_RECORD_FIELDS: Final = frozenset(FIELD_NAMES) - {"page"}
# ASCII digits only: str.isdigit() and \d also take digits int() refuses ("²") or that are not
# numbers of this API ("٣"), and numbers past SQL's BIGINT overflow the driver (both were 500s).
_NUMBER_RE: Final = re.compile(r"[0-9]{1,18}")
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,12}")
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(dict[str, Any]).decode

Handler = Callable[[Request], Awaitable[Response]]


def routes() -> list[Route]:
    return [
        Route("/api/v4/openapi.json", openapi, methods=["GET"]),
        Route("/api/v4/calls/changes", changes, methods=["GET"]),
        Route("/api/v4/calls", calls, methods=["GET"]),
        Route("/api/v4/calls/{universal_id}", one_call, methods=["GET"]),
        Route("/api/v4/stats", stats, methods=["GET"]),
        Route("/api/v4/{rest:path}", unknown, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]


def problems(handler: Handler) -> Handler:
    """Problems and an unavailable store as problem+json answers."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Problem as problem:
            return problem.response()
        except StoreUnavailable:
            return unavailable(_service(request).settings.retry_after).response()

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


@problems
async def openapi(request: Request) -> Response:
    return Response(document(), media_type=JSON)


@problems
async def unknown(request: Request) -> Response:
    path = request.url.path
    if request.method != "GET" and (path in _READ_PATHS or _ONE_CALL.fullmatch(path)):
        raise Problem(
            405,
            "method-not-allowed",
            "Method not allowed",
            f"{path} is read with GET; v4 changes nothing",
            headers={"allow": "GET"},
        )
    raise not_found(f"no such resource: {path}")


_READ_PATHS: Final = frozenset(
    {"/api/v4/openapi.json", "/api/v4/calls/changes", "/api/v4/calls", "/api/v4/stats"}
)
_ONE_CALL: Final = re.compile(r"/api/v4/calls/[^/]+")


@problems
async def changes(request: Request) -> Response:
    """``GET /api/v4/calls/changes``: each change once, in commit order, from a cursor."""
    caller = await _caller(request)  # the key first: 401 before any 400
    params = request.query_params
    streamed = _wants_ndjson(request)
    limit = parse_limit(params.get("limit"), FEED_LIMIT, streamed)
    fields = _fields(params.get("fields"))
    after: FeedCursor | None = None
    if params.get("after") is not None:
        try:
            after = decode(params["after"])
        except BadCursor as exc:
            raise bad_parameter("after", str(exc)) from None
    service = _service(request)
    store, zone = service.store, service.settings.zone
    cursor = await service.read(feed.start, store, caller.owners, after)
    if not streamed:
        page = await service.read(feed.read, store, cursor, limit, zone, fields, caller.owners)
        return Response(feed.lines_json(page), media_type=JSON)

    # Where reads go to threads (the database is another process), the batches' rows are
    # streamed, or read ahead, while the batch before is rendered (feed.StreamedReads).
    streamed_reads = (
        None if service.reads_inline else feed.StreamedReads(store, service.threads.submit, limit)
    )
    reads = streamed_reads or store

    def batch(position: FeedCursor, size: int) -> tuple[feed.FeedPage, bytes]:
        page = feed.read(reads, position, size, zone, fields, caller.owners)
        return page, page.ndjson()

    async def lines() -> AsyncIterator[bytes]:
        # Each batch is read (and rendered) while the one before is sent: the client reading
        # one batch no longer holds up the next.
        left = limit
        pending = asyncio.ensure_future(service.read(batch, cursor, min(left, STREAM_BATCH)))
        try:
            while True:
                page, body = await pending
                left -= page.count
                more = page.has_more and left > 0
                if more:
                    size = min(left, STREAM_BATCH)
                    pending = asyncio.ensure_future(service.read(batch, page.next, size))
                if body:
                    yield body
                if not more:
                    yield feed.trailer(page)
                    return
        finally:  # the client left: the batch read ahead is not sent, nor its error logged
            if not pending.cancel() and not pending.cancelled():
                pending.exception()
            if streamed_reads is not None:  # once the last batch's read is done, in a thread
                done = streamed_reads.close
                pending.add_done_callback(lambda _: service.threads.submit(done))

    return StreamingResponse(lines(), media_type=NDJSON)


@problems
async def calls(request: Request) -> Response:
    """``GET /api/v4/calls``: calls in call-time order, filtered, with keyset cursors."""
    caller = await _caller(request)  # the key first: 401 before any 400
    params = request.query_params
    service = _service(request)
    zone = service.settings.zone
    streamed = _wants_ndjson(request)
    limit = parse_limit(params.get("limit"), CALLS_LIMIT, streamed)
    where = call_filter(params, zone)
    fields = _fields(params.get("fields"))
    order = params.get("order", "callTime")
    if order not in ("callTime", "-callTime"):
        raise bad_parameter("order", "expected callTime or -callTime")
    descending = order == "-callTime"
    position = parse_position(params.get("cursor"))
    store = service.store
    if position is None:
        total = await service.in_thread(store.count_filtered, caller.owners, where)
        after = None
    else:
        total, after = position[2], (position[0], position[1])

    if not streamed:
        rows = await service.in_thread(
            store.filtered_calls, caller.owners, where, after, limit + 1, descending
        )
        shown = rows[:limit]
        following = position_text(shown[-1][0], shown[-1][1], total) if len(rows) > limit else None
        body = (
            b'{"calls":['
            + b",".join(feed.call_json(row[2], fields) for row in shown)
            + b'],"next":'
            + _encode(following)
            + b',"total":'
            + str(total).encode()
            + b"}"
        )
        return Response(body, media_type=JSON)

    async def lines() -> AsyncIterator[bytes]:
        place, left = after, limit
        while True:
            batch = min(left, STREAM_BATCH)
            rows = await service.in_thread(
                store.filtered_calls, caller.owners, where, place, batch + 1, descending
            )
            shown = rows[:batch]
            left -= len(shown)
            if shown:
                place = (shown[-1][0], shown[-1][1])
                yield b"".join(feed.call_json(row[2], fields) + b"\n" for row in shown)
            if len(rows) <= batch or left <= 0:
                more = len(rows) > batch
                following = position_text(*place, total) if more and place else None
                yield b'{"next":' + _encode(following) + b',"total":' + str(total).encode() + b"}\n"
                return

    return StreamingResponse(lines(), media_type=NDJSON)


@problems
async def one_call(request: Request) -> Response:
    """``GET /api/v4/calls/{universalId}``: one call the key sees."""
    caller = await _caller(request)  # the key first: 401 before any 400
    universal_id = request.path_params["universal_id"]
    fields = _fields(request.query_params.get("fields"))
    service = _service(request)
    body = await service.in_thread(service.store.visible_call, caller.owners, universal_id)
    if body is None:
        raise not_found(f"no call {universal_id!r} that this key may see")
    return Response(feed.call_json(body, fields), media_type=JSON)


@problems
async def stats(request: Request) -> Response:
    """``GET /api/v4/stats``: counts per group (day, hour, source, campaign, utm, device)."""
    caller = await _caller(request)  # the key first: 401 before any 400
    params = request.query_params
    service = _service(request)
    zone = service.settings.zone
    where = call_filter(params, zone)
    by = tuple(part for part in (params.get("by") or "").split(",") if part)
    if len(by) > 2 or len(set(by)) != len(by) or any(name not in BY_NAMES for name in by):
        raise bad_parameter("by", f"one or two of {', '.join(BY_NAMES)}, different")
    if "day" in by and "hour" in by:
        raise bad_parameter("by", "day or hour, not both")
    store = service.store
    rows = await service.in_thread(store.call_stats, caller.owners, where, by)
    names = await service.in_thread(store.campaign_names, caller.owners) if "campaign" in by else {}
    groups = _grouped(rows, by, zone, names)
    answer = {"by": list(by), "groups": groups}
    return Response(_encode(answer), media_type=JSON)


# -- parameters ---------------------------------------------------------------------------------


def _service(request: Request) -> Any:
    return request.app.state.service


async def _caller(request: Request) -> Caller:
    key = bearer_key(request)
    service = _service(request)
    caller: Caller = await service.in_thread(
        authorize, service.store, service.settings, key, request.query_params.get("scope")
    )
    return caller


def _wants_ndjson(request: Request) -> bool:
    return NDJSON in request.headers.get("accept", "")


def parse_limit(text: str | None, bounds: tuple[int, int, int], streamed: bool) -> int:
    default, largest_json, largest_stream = bounds
    largest = largest_stream if streamed else largest_json
    if text is None:
        return default
    if not _NUMBER_RE.fullmatch(text) or not 1 <= int(text) <= largest:
        raise bad_parameter("limit", f"expected a whole number from 1 to {largest:,}")
    return int(text)


def _fields(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in _RECORD_FIELDS]
    if not names or unknown:
        shown = unknown[0] if unknown else "(none)"
        raise bad_parameter("fields", f"unknown field {shown!r}: names of the call record")
    return names


def call_filter(params: Any, zone: ZoneInfo) -> CallFilter:
    start = _instant(params.get("from"), zone, "from", end_of_day=False)
    end = _instant(params.get("to"), zone, "to", end_of_day=True)
    if start is not None and end is not None and end < start:
        raise bad_parameter("to", "is before from")
    campaign = params.get("campaign")
    if campaign is not None and not _NUMBER_RE.fullmatch(campaign):
        raise bad_parameter("campaign", "expected a campaign id (a whole number)")
    digits = params.get("q")
    if digits is not None:
        digits = "".join(ch for ch in digits if ch in "0123456789")
        if not digits:
            raise bad_parameter("q", "expected digits of a phone number")
    status = params.get("status")
    if status is not None and status not in ("success", "fail"):
        raise bad_parameter("status", "expected success or fail")
    return CallFilter(
        start=0 if start is None else start,
        end=2**62 if end is None else end,
        status=status,
        service_type=params.get("serviceType"),
        campaign=None if campaign is None else int(campaign),
        tag=params.get("tag"),
        utm_source=params.get("utm_source"),
        utm_medium=params.get("utm_medium"),
        utm_campaign=params.get("utm_campaign"),
        unique=_flag(params.get("unique"), "unique"),
        target=_flag(params.get("target"), "target"),
        digits=digits,
    )


def _flag(text: str | None, name: str) -> bool | None:
    if text is None:
        return None
    if text not in ("true", "false"):
        raise bad_parameter(name, "expected true or false")
    return text == "true"


def _instant(text: str | None, zone: ZoneInfo, name: str, *, end_of_day: bool) -> int | None:
    """A date in the service zone (its first or last second), unix seconds, or ISO 8601 with
    an offset."""
    if text is None:
        return None
    if _TIMESTAMP_RE.fullmatch(text):
        return int(text)
    try:
        if _DATE_RE.fullmatch(text):
            day = date.fromisoformat(text)
            hour, minute, second = (23, 59, 59) if end_of_day else (0, 0, 0)
            moment = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=zone)
            return int(moment.timestamp())
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise bad_parameter(name, "expected YYYY-MM-DD, unix seconds, or ISO 8601 with an offset")
    return int(moment.timestamp())


_POSITION_PREFIX: Final = "k1."
_SIGNED_NUMBER_RE: Final = re.compile(r"-?[0-9]{1,18}")


def position_text(call_time: int, call_id: int, total: int) -> str:
    """A keyset cursor: after (call_time, id), and the ``total`` the first page counted
    (counting every page cost more than reading it)."""
    raw = f"{call_time}.{call_id}.{total}".encode()
    return _POSITION_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_position(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    body = text.removeprefix(_POSITION_PREFIX)
    try:
        if body == text:
            raise ValueError
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
        parts = raw.split(".")
        if len(parts) != 3 or not all(_SIGNED_NUMBER_RE.fullmatch(part) for part in parts):
            raise ValueError  # past BIGINT: the driver overflows (was a 500)
        call_time, call_id, total = (int(part) for part in parts)
        if total < 0:
            raise ValueError
        return call_time, call_id, total
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_parameter("cursor", "not a cursor of this list") from None


def _grouped(
    rows: list[StatsRow], by: tuple[str, ...], zone: ZoneInfo, names: dict[int, str]
) -> list[dict[str, object]]:
    """Stats rows keyed by quarter hours turned into the zone's days or hours, summed."""
    totals: dict[tuple[object, ...], list[int]] = {}
    for row in rows:
        key = tuple(
            _period(int(str(value)), name, zone) if name in ("day", "hour") else value
            for name, value in zip(by, row.keys, strict=True)
        )
        sums = totals.setdefault(key, [0, 0, 0, 0, 0, 0])
        counts = (
            row.calls,
            row.answered,
            row.unique,
            row.target,
            row.unique_target,
            row.talk_seconds,
        )
        for index, count in enumerate(counts):
            sums[index] += count
    groups = []
    for key in sorted(totals, key=lambda k: tuple(str(part) for part in k)):
        group: dict[str, object] = {}
        for name, value in zip(by, key, strict=True):
            group[name] = value
            if name == "campaign":
                group["campaignName"] = names.get(int(str(value)), "")
        calls_, answered, unique, target, unique_target, talk = totals[key]
        group.update(
            calls=calls_,
            answered=answered,
            unique=unique,
            target=target,
            uniqueTarget=unique_target,
            talkSeconds=talk,
        )
        groups.append(group)
    return groups


def _period(quarter: int, name: str, zone: ZoneInfo) -> str:
    moment = datetime.fromtimestamp(quarter + QUARTER_HOUR // 2, zone)
    return moment.strftime("%Y-%m-%d") if name == "day" else moment.strftime("%Y-%m-%d %H:00")
