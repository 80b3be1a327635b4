"""The console's calls: a filtered table paged by cursor, its downloads, and one call's page.

The filters are v4's (``/api/v4/calls``): the same parameter names in the URL, read by the same
parser (``call_filter``), the same store reads (``count_filtered``, ``filtered_calls``,
``visible_call``) over the visitor's ``owners`` and nothing else, and the same keyset cursors.
A bad value is the page again with v4's message (naming the parameter) and status 400.

Downloads are the files of ``calltrack export``: CSV for Excel (UTF-8 with a byte order mark,
``;`` between fields, the v3 field names as the header) streamed batch by batch, and XLSX
written in constant memory to a temporary file and sent from it. Free-text cells that a
spreadsheet would take for a formula (``= + - @``) start with ``'`` in both; so does a time
zone's offset (``+0300``) in the CSV, which Excel would read as the number 300.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from calltrack.api.app import Service, service_of
from calltrack.api.v4.problems import Problem, bad_parameter
from calltrack.api.v4.routes import call_filter, parse_limit, parse_position, position_text
from calltrack.client import MissingExtra
from calltrack.client.writers import COLUMNS, CsvWriter, XlsxWriter, require_extra
from calltrack.console.session import PATH
from calltrack.console.web import SECURITY_HEADERS, Visitor, error_page, page, render
from calltrack.model import FIELD_NAMES, CallRecord
from calltrack.store import Store
from calltrack.store.changes import CallFilter
from calltrack.store.hooks import CallDelivery

MESSAGES: Final[dict[str, tuple[str, str]]] = {
    "calls.title": ("Calls", "Звонки"),
    "calls.total": ("Calls found: {count}", "Найдено звонков: {count}"),
    "calls.zone": ("Times are in {zone}.", "Время указано в зоне {zone}."),
    "calls.all_time": ("All time", "Всё время"),
    "calls.status": ("Status", "Статус"),
    "calls.any": ("any", "любой"),
    "calls.status.success": ("answered", "отвечен"),
    "calls.status.fail": ("missed", "пропущен"),
    "calls.type": ("Type", "Тип"),
    "calls.type.callback": ("callback", "обратный звонок"),
    "calls.type.calltracking": ("call tracking", "коллтрекинг"),
    "calls.type.import": ("import", "импорт"),
    "calls.campaign": ("Campaign", "Кампания"),
    "calls.source": ("Source (utm_source)", "Источник (utm_source)"),
    "calls.utm_medium": ("utm_medium", "utm_medium"),
    "calls.utm_campaign": ("utm_campaign", "utm_campaign"),
    "calls.tag": ("Tag", "Тег"),
    "calls.unique": ("Unique", "Уникальный"),
    "calls.target": ("Target", "Целевой"),
    "calls.yes_no.true": ("yes", "да"),
    "calls.yes_no.false": ("no", "нет"),
    "calls.digits": ("Number contains", "Номер содержит"),
    "calls.order": ("Order", "Порядок"),
    "calls.order.newest": ("newest first", "сначала новые"),
    "calls.order.oldest": ("oldest first", "сначала старые"),
    "calls.per_page": ("Per page", "На странице"),
    "calls.apply": ("Show", "Показать"),
    "calls.reset": ("Reset filters", "Сбросить фильтры"),
    "calls.download": ("Download", "Скачать"),
    "calls.download_csv": ("CSV for Excel", "CSV для Excel"),
    "calls.download_xlsx": ("XLSX", "XLSX"),
    "calls.time": ("Time", "Время"),
    "calls.caller": ("Caller", "Кто звонил"),
    "calls.tracking_number": ("Tracking number", "Номер отслеживания"),
    "calls.duration": ("Duration", "Длительность"),
    "calls.source_short": ("Source / medium", "Источник / канал"),
    "calls.flags": ("Flags", "Отметки"),
    "calls.tags": ("Tags", "Теги"),
    "calls.open": ("Open the call {id}", "Открыть звонок {id}"),
    "calls.none": ("No calls match these filters.", "Под эти фильтры не подходит ни один звонок."),
    "calls.next": ("Next page", "Следующая страница"),
    "calls.first": ("First page", "Первая страница"),
    "calls.bad_parameter": (
        "The filter {name} was not understood: {detail}",
        "Фильтр {name} не понят: {detail}",
    ),
    "calls.xlsx_missing": (
        "XLSX files need the xlsx extra on the server: pip install 'calltrack[xlsx]'",
        "Для файлов XLSX на сервере нужен пакет xlsx: pip install 'calltrack[xlsx]'",
    ),
    "calls.call_title": ("Call {id}", "Звонок {id}"),
    "calls.back": ("All calls", "Все звонки"),
    "calls.recording": ("Recording", "Запись разговора"),
    "calls.recording_link": ("Open the recording", "Открыть запись"),
    "calls.no_recording": ("No recording.", "Записи нет."),
    "calls.record": ("The call record", "Запись о звонке"),
    "calls.visit": ("The visit it came from", "Визит, с которого позвонили"),
    "calls.no_visit": ("No visit is known for this call.", "Визит для этого звонка неизвестен."),
    "calls.deliveries": ("Webhook deliveries", "Доставки вебхуков"),
    "calls.no_deliveries": ("No webhook deliveries.", "Вебхуки не отправлялись."),
    "calls.endpoint": ("Endpoint", "Адрес"),
    "calls.event": ("Event", "Событие"),
    "calls.state": ("State", "Состояние"),
    "calls.state.pending": ("pending", "в очереди"),
    "calls.state.delivered": ("delivered", "доставлено"),
    "calls.state.failed": ("failed", "не доставлено"),
    "calls.state.cancelled": ("cancelled", "отменено"),
    "calls.created": ("Created", "Создано"),
    "calls.next_try": ("next try {time}", "следующая попытка {time}"),
    "calls.attempts": ("Attempts", "Попытки"),
    "calls.no_attempts": ("none yet", "пока нет"),
    "calls.http_status": ("HTTP {status}", "HTTP {status}"),
    "calls.no_answer": ("no answer", "нет ответа"),
    "calls.took": ("{ms} ms", "{ms} мс"),
}

FILTERS: Final = (
    "from",
    "to",
    "status",
    "serviceType",
    "campaign",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "tag",
    "unique",
    "target",
    "q",
)
PAGE_SIZES: Final = (25, 50, 100, 200)
LIMITS: Final = (50, 500, 500)  # default, largest (a page is never streamed)
NEWEST: Final = "-callTime"
ORDERS: Final = ("-callTime", "callTime")
PERIOD_DAYS: Final = {"today": 1, "7d": 7, "30d": 30}
DOWNLOAD_BATCH: Final = 1000  # calls read from the store per step of a download
STATUSES: Final = ("success", "fail")
SERVICE_TYPES: Final = ("callback", "calltracking", "import")
STATES: Final = ("pending", "delivered", "failed", "cancelled")
# The record's fields of the visit a call came from; the record section shows the rest.
VISIT_FIELDS: Final = (
    "site",
    "visitSite",
    "siteVisit",
    "entryPoint",
    "entryPointQuery",
    "referrer",
    "callPage",
    "pagesCount",
    "counts",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "yaClid",
    "gaClid",
    "roistatClid",
    "calltouchClid",
    "comagicClid",
    "device",
    "userAgent",
    "ipAddress",
    "city",
    "region",
    "country",
)
RECORD_FIELDS: Final = tuple(
    name for name in FIELD_NAMES if name != "page" and name not in VISIT_FIELDS
)
_FREE_TEXT: Final = tuple(name for name, kind in COLUMNS if kind == "free_text")
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
# Text of the CSV only that Excel would take for a number: "+0300" shows as 300. An XLSX cell of
# text stays text, so there it is left as it is.
_CSV_TEXT: Final = ("timezoneOffset",)
_decode = msgspec.json.Decoder(CallRecord).decode
_encode = msgspec.json.Encoder().encode
XLSX_TYPE: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_TYPE: Final = "text/csv; charset=utf-8"


def routes() -> list[BaseRoute]:
    return [
        Route(PATH + "/calls", calls_page, methods=["GET", "HEAD"]),
        Route(PATH + "/calls.{extension}", download, methods=["GET"]),
        Route(PATH + "/calls/{universal_id:path}", call_page, methods=["GET", "HEAD"]),
    ]


# -- what the URL asks for ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """The filters as given (empty fields left out), and what v4's parser made of them."""

    values: dict[str, str]  # filter name -> value, for the form and the links
    order: str
    where: CallFilter

    @property
    def descending(self) -> bool:
        return self.order == NEWEST

    def url(self, path: str, **extra: str) -> str:
        """``path`` with these filters (the order when not the default) and ``extra``."""
        params = dict(self.values)
        if self.order != NEWEST:
            params["order"] = self.order
        params.update({name: value for name, value in extra.items() if value})
        return path + ("?" + urlencode(params) if params else "")


def given(params: Mapping[str, str]) -> dict[str, str]:
    """The filters a URL sets: a form's empty fields (and surrounding spaces) are no filter."""
    return {name: value for name in FILTERS if (value := params.get(name, "").strip())}


def query_of(params: Mapping[str, str], zone: ZoneInfo) -> Query:
    """The page's filters and order; a Problem naming the parameter when one is bad."""
    values = given(params)
    order = params.get("order") or NEWEST
    if order not in ORDERS:
        raise bad_parameter("order", "expected callTime or -callTime")
    return Query(values, order, call_filter(values, zone))


def bad_query(params: Mapping[str, str]) -> Query:
    """The filters as typed, for the form shown again with the problem."""
    order = params.get("order") or NEWEST
    return Query(given(params), order if order in ORDERS else NEWEST, CallFilter())


def periods(query: Query, zone: ZoneInfo) -> list[tuple[str, str, bool]]:
    """(name, link, current) of the quick periods: whole days up to today, and all time."""
    today = datetime.now(zone).date()
    chips: list[tuple[str, str, bool]] = []
    for name, days in PERIOD_DAYS.items():
        first = (today - timedelta(days=days - 1)).isoformat()
        shown = {"from": first, "to": today.isoformat()}
        current = all(query.values.get(key) == value for key, value in shown.items())
        chips.append((name, _with(query, shown), current))
    everything = "from" not in query.values and "to" not in query.values
    chips.append(("all", _with(query, {"from": "", "to": ""}), everything))
    return chips


def _with(query: Query, changes: dict[str, str]) -> str:
    values = {**query.values, **changes}
    return Query({k: v for k, v in values.items() if v}, query.order, query.where).url(
        PATH + "/calls"
    )


# -- the pages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    calls: list[CallRecord]
    total: int
    next: str | None  # the cursor of the next page
    campaigns: list[tuple[int, str]]


def listing(
    store: Store,
    owners: tuple[int, ...],
    query: Query,
    position: tuple[int, int, int] | None,
    limit: int,
) -> Listing:
    """A page of calls (runs in a thread): the total (counted on the first page and carried
    in the cursor after, as v4 does), the calls, and the campaigns for the filter."""
    if position is None:
        total, after = store.count_filtered(owners, query.where), None
    else:
        total, after = position[2], (position[0], position[1])
    rows = store.filtered_calls(owners, query.where, after, limit + 1, query.descending)
    shown = rows[:limit]
    following = position_text(shown[-1][0], shown[-1][1], total) if len(rows) > limit else None
    campaigns = _campaigns(store.campaign_names(owners))
    return Listing([_record(row[2]) for row in shown], total, following, campaigns)


@page()
async def calls_page(request: Request, visitor: Visitor) -> Response:
    service = service_of(request)
    zone = service.settings.zone
    params = request.query_params
    try:
        query = query_of(params, zone)
        limit = parse_limit(params.get("limit") or None, LIMITS, False)
        position = parse_position(params.get("cursor") or None)
    except Problem as problem:
        return await _bad_page(request, visitor, problem)
    found = await service.in_thread(listing, service.store, visitor.owners, query, position, limit)
    page_size = "" if limit == LIMITS[0] else str(limit)
    return _list_page(
        request,
        visitor,
        query,
        200,
        problem="",
        limit=limit,
        found=found,
        next_url=query.url(PATH + "/calls", limit=page_size, cursor=found.next or ""),
        first_url=query.url(PATH + "/calls", limit=page_size) if position else "",
    )


async def _bad_page(request: Request, visitor: Visitor, problem: Problem) -> Response:
    """The page again with the filters as typed and v4's message naming the bad one: 400."""
    service = service_of(request)
    names = await service.in_thread(service.store.campaign_names, visitor.owners)
    return _list_page(
        request,
        visitor,
        bad_query(request.query_params),
        400,
        problem=visitor.t(
            "calls.bad_parameter", name=problem.parameter or "", detail=problem.detail
        ),
        limit=LIMITS[0],
        found=Listing([], 0, None, _campaigns(names)),
    )


def _campaigns(names: dict[int, str]) -> list[tuple[int, str]]:
    return sorted(names.items(), key=lambda item: (item[1].lower(), item[0]))


def _list_page(
    request: Request,
    visitor: Visitor,
    query: Query,
    status: int,
    *,
    problem: str,
    limit: int,
    found: Listing,
    next_url: str = "",
    first_url: str = "",
) -> Response:
    zone = service_of(request).settings.zone
    return render(
        request,
        visitor,
        "calls.html",
        status,
        problem=problem,
        filters=query,
        values=query.values,
        found=found,
        limit=limit,
        page_sizes=PAGE_SIZES,
        statuses=STATUSES,
        service_types=SERVICE_TYPES,
        periods=periods(query, zone),
        zone=zone.key,
        next_url=next_url if found.next else "",
        first_url=first_url,
        csv_url=query.url(PATH + "/calls.csv"),
        xlsx_url=query.url(PATH + "/calls.xlsx"),
        call_url=call_url,
        duration=duration,
    )


@page()
async def call_page(request: Request, visitor: Visitor) -> Response:
    """One call the visitor sees; 404 alike for an unknown call and another account's."""
    service = service_of(request)
    universal_id = request.path_params["universal_id"]
    found = await service.in_thread(_one_call, service.store, visitor.owners, universal_id)
    if found is None:
        return error_page(request, visitor, 404, "error.not_found")
    record, deliveries = found
    zone = service.settings.zone
    visit = [(name, getattr(record, name)) for name in VISIT_FIELDS]
    return render(
        request,
        visitor,
        "call.html",
        record=record,
        fields=[(name, shown(getattr(record, name))) for name in RECORD_FIELDS],
        visit=[(name, shown(value), web_url(value)) for name, value in visit],
        has_visit=any(value for name, value in visit if name not in ("site",)),
        recording=record.recordUrl if web_url(record.recordUrl) else "",
        deliveries=deliveries,
        states=STATES,
        moment=lambda ms: _moment(ms, zone),
        zone=zone.key,
        duration=duration,
    )


def _one_call(
    store: Store, owners: tuple[int, ...], universal_id: str
) -> tuple[CallRecord, list[CallDelivery]] | None:
    body = store.visible_call(owners, universal_id)
    if body is None:
        return None
    return _record(body), store.call_deliveries(owners, universal_id)


# -- downloads ---------------------------------------------------------------------------------


@page()
async def download(request: Request, visitor: Visitor) -> Response:
    """Every call the filters select, in the page's order: ``calls.csv`` streamed batch by
    batch, ``calls.xlsx`` written to a file first (501 without the xlsx extra)."""
    service = service_of(request)
    extension = request.path_params["extension"]
    if extension not in ("csv", "xlsx"):
        return error_page(request, visitor, 404, "error.not_found")
    try:
        query = query_of(request.query_params, service.settings.zone)
    except Problem as problem:
        return await _bad_page(request, visitor, problem)
    if extension == "csv":
        return StreamingResponse(
            _csv_chunks(service, visitor.owners, query),
            headers=_attachment("csv"),
            media_type=CSV_TYPE,
        )
    try:
        require_extra("xlsx")
    except MissingExtra:
        return error_page(request, visitor, 501, "calls.xlsx_missing")
    handle, path = tempfile.mkstemp(prefix="calltrack-calls-", suffix=".xlsx")
    os.close(handle)
    try:  # removed here if writing fails or is cancelled, else once sent (or not)
        await service.in_thread(write_xlsx, service.store, visitor.owners, query, path)
    except BaseException:
        _remove(path)
        raise
    return TemporaryFileResponse(path, headers=_attachment("xlsx"), media_type=XLSX_TYPE)


class TemporaryFileResponse(FileResponse):
    """A temporary file as the answer, removed once sent, or once sending failed midway (the
    client went away): a background task would run only after a complete send."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            _remove(str(self.path))


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def _csv_chunks(
    service: Service, owners: tuple[int, ...], query: Query
) -> AsyncIterator[bytes]:
    buffer = io.BytesIO()
    writer = CsvWriter(buffer, excel=True)  # the byte order mark, then the header
    yield _drained(buffer)
    after: tuple[int, int] | None = None
    while True:
        records, after = await service.in_thread(read_batch, service.store, owners, query, after)
        writer.write([guarded(record, _CSV_TEXT) for record in records])
        yield _drained(buffer)
        if after is None:
            return


def read_batch(
    store: Store, owners: tuple[int, ...], query: Query, after: tuple[int, int] | None
) -> tuple[list[CallRecord], tuple[int, int] | None]:
    """A download's next calls after ``after``, guarded for spreadsheets, and where the next
    batch starts (None: these were the last)."""
    rows = store.filtered_calls(owners, query.where, after, DOWNLOAD_BATCH, query.descending)
    records = [guarded(_record(row[2])) for row in rows]
    following = (rows[-1][0], rows[-1][1]) if len(rows) == DOWNLOAD_BATCH else None
    return records, following


def write_xlsx(store: Store, owners: tuple[int, ...], query: Query, path: str) -> None:
    """The workbook, written to ``path`` (runs in a thread)."""
    writer = XlsxWriter(Path(path))
    after: tuple[int, int] | None = None
    while True:
        records, after = read_batch(store, owners, query, after)
        writer.write(records)
        if after is None:
            break
    writer.close()


def guarded(record: CallRecord, names: tuple[str, ...] = _FREE_TEXT) -> CallRecord:
    """The record with the values of ``names`` (free text) that a spreadsheet would run as a
    formula, or read as a number, made plain text: a leading ``'``."""
    for name in names:
        value = getattr(record, name)
        if value.startswith(_FORMULA_START):
            setattr(record, name, "'" + value)
    return record


def _attachment(extension: str) -> dict[str, str]:
    name = f"calls-{datetime.now().strftime('%Y%m%d-%H%M%S')}.{extension}"
    return {**SECURITY_HEADERS, "content-disposition": f'attachment; filename="{name}"'}


def _drained(buffer: io.BytesIO) -> bytes:
    data = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return data


# -- what the templates show -------------------------------------------------------------------


def _record(body: bytes) -> CallRecord:
    record: CallRecord = _decode(b"{" + body)
    return record


def call_url(universal_id: str) -> str:
    return f"{PATH}/calls/{quote(universal_id, safe='')}"


def web_url(value: object) -> bool:
    """Whether ``value`` may go into an href or src: an http(s) URL and nothing else (never
    ``javascript:`` or ``data:``), without spaces or control characters a browser drops."""
    if not isinstance(value, str) or not value.lower().startswith(("http://", "https://")):
        return False
    return not any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value)


def shown(value: object) -> object:
    """A record value for a definition list: lists of numbers and hooks as JSON text."""
    if isinstance(value, list) and value and not isinstance(value[0], str):
        return _encode(value).decode()
    return value


def duration(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"


def _moment(ms: int | None, zone: ZoneInfo) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d %H:%M:%S")
