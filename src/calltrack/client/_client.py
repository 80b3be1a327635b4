"""The client: requests, retries with backoff, typed pages of calls (v3) and changes (v4).

Policy lives here: which failures are retried (connection errors, timeouts, bodies cut short,
HTTP 5xx and 429), how long to wait (exponential backoff with jitter, at least what
``Retry-After`` asks), and how answers become records or exceptions.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Final, Literal, Self, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import httpx2
import msgspec

from calltrack.client._errors import (
    ApiError,
    ConnectionFailed,
    CursorExpired,
    FeedNotOffered,
    IncorrectPage,
    InvalidResponse,
    NoRowsFound,
    UserNotRecognized,
    api_error,
    server_error,
)
from calltrack.model import CallRecord
from calltrack.retry_after import parse_retry_after

Method = Literal["get", "getByRole", "getWithRole"]
METHODS: Final[tuple[Method, ...]] = ("get", "getByRole", "getWithRole")
Scope = Literal["own", "withRole"]
NDJSON: Final = "application/x-ndjson"
STREAM_LIMIT: Final = 100_000  # the most changes one NDJSON answer may carry
DateLike = date | datetime | int | str
DEFAULT_TIMEZONE: Final = "Europe/Moscow"
MAX_PAGE: Final = 999_999_999  # the contract's page number has at most 9 digits

log = logging.getLogger("calltrack.client")
_T = TypeVar("_T")


class _HideKeys(logging.Filter):
    """httpx2 logs each request's URL at INFO, and v3 keys travel in the URL: hide them."""

    _KEY = re.compile(r"(?<=[?/])[a-z0-9]{16}(?=/|$)")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._KEY.sub("<key>", str(arg)) if isinstance(arg, httpx2.URL) else arg
                for arg in record.args
            )
        return True


logging.getLogger("httpx2").addFilter(_HideKeys())

_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
KEY_RE: Final = re.compile(r"[a-z0-9]{16}")  # a v3 key; anything else is "User is not recognized"
MAX_TIMESTAMP_DIGITS: Final = 18  # what a v3 server reads as a timestamp
_RETRIED_TRANSPORT_ERRORS = (
    httpx2.TimeoutException,
    httpx2.NetworkError,
    httpx2.RemoteProtocolError,
)


class _Inbound(msgspec.Struct):
    error: str = ""
    requestId: str = ""


class _Envelope(msgspec.Struct):
    inbound: _Inbound


_page_decoder: Final[msgspec.json.Decoder[list[CallRecord] | _Envelope]] = msgspec.json.Decoder(
    list[CallRecord] | _Envelope
)
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)


class Change(msgspec.Struct, frozen=True):
    """One change of the v4 changes feed.

    ``op`` is ``"upsert"`` (the call is new or changed: ``call`` is its current record, with
    ``page`` 0) or ``"delete"`` (``call`` is None). ``changed_at`` is when it changed
    (``YYYY-MM-DD HH:MM:SS``, service time zone). ``cursor`` resumes the feed just after
    this change: ``client.changes(after=change.cursor)``.
    """

    cursor: str
    op: Literal["upsert", "delete"]
    universal_id: str = msgspec.field(name="universalId")
    changed_at: str = msgspec.field(name="changedAt")
    call: CallRecord | None = None


class Changes(Iterator[Change]):
    """What ``Client.changes`` returns: the changes, one by one, and ``cursor``, where the
    feed resumes after the changes taken so far (the last one's cursor; once the feed is
    exhausted, its final ``next``, which may be past the last change). Save ``cursor`` only
    after what was taken is safely applied."""

    def __init__(self, after: str | None) -> None:
        self.cursor = after
        self._iterator: Iterator[Change] = iter(())

    def __next__(self) -> Change:
        return next(self._iterator)

    def close(self) -> None:
        """Stop early: the open answer, if any, is closed."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()


class _FeedPage(msgspec.Struct):
    changes: list[Change]
    next: str
    hasMore: bool


class _Trailer(msgspec.Struct):
    """An NDJSON answer's last line."""

    next: str
    hasMore: bool


class _Problem(msgspec.Struct):
    """RFC 9457 problem details (the fields the client reads)."""

    title: str = ""
    detail: str = ""
    parameter: str | None = None


_feed_page_decoder: Final = msgspec.json.Decoder(_FeedPage)
_change_decoder: Final = msgspec.json.Decoder(Change)
_trailer_decoder: Final = msgspec.json.Decoder(_Trailer)
_problem_decoder: Final = msgspec.json.Decoder(_Problem)


class _Retry(Exception):
    """A failure worth another try; carries the error to raise when tries run out."""

    def __init__(self, error: Exception, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class Client:
    """A v3 API client: ``Client("https://host", "key")``, then ``iter_calls(start)``.

    ``base_url`` is the server (``/api/`` is added unless the path already ends in ``/api/``
    or ``/index.php``). ``retries`` is how many times a transient failure is tried again,
    waiting ``backoff * 2**attempt`` seconds (times a random 0.5-1, at most ``max_backoff``,
    and never less than the server's ``Retry-After``). ``timezone`` is the service time zone,
    used only to turn naive datetimes into timestamps. ``transport`` and ``sleep`` are for
    tests and special networks.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timezone: str | ZoneInfo = DEFAULT_TIMEZONE,
        transport: httpx2.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0 or backoff < 0 or max_backoff < 0 or timeout <= 0:
            raise ValueError("retries, backoff and max_backoff must be >= 0, timeout > 0")
        self.endpoint = api_endpoint(base_url)
        self.v4_endpoint = v4_endpoint(self.endpoint)
        self.api_key = api_key
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.zone = timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)
        self._sleep = sleep
        self._random = random.Random()
        self._http = httpx2.Client(
            transport=transport,
            timeout=timeout,
            follow_redirects=True,
            headers={"user-agent": _user_agent(), "accept": "application/json"},
        )

    # -- reading ----------------------------------------------------------------------------

    def page(
        self,
        number: int,
        start: DateLike,
        end: DateLike | None = None,
        *,
        method: Method = "get",
    ) -> list[CallRecord]:
        """The calls of one page; ``[]`` when the server says "No rows found".

        Raises ``IncorrectPage`` for a page past the last one, and the other ``ApiError``
        subclasses for the other documented answers.
        """
        try:
            return self._page(number, start, end, method)
        except NoRowsFound:
            return []

    def _page(
        self, number: int, start: DateLike, end: DateLike | None, method: Method
    ) -> list[CallRecord]:
        if not 0 <= number <= MAX_PAGE:
            raise ValueError(f"page must be between 0 and {MAX_PAGE}, got {number}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        segments = ["json", "v3", self.api_key, "call", method, str(number)]
        segments.append(time_segment(start, self.zone))
        if end is not None:
            segments.append(time_segment(end, self.zone))
        query = "/".join(quote(segment, safe="") for segment in segments)
        return self._fetch(f"{self.endpoint}?{query}", f"page {number}")

    def iter_pages(
        self,
        start: DateLike,
        end: DateLike | None = None,
        *,
        method: Method = "get",
        first_page: int = 0,
    ) -> Iterator[tuple[int, list[CallRecord]]]:
        """(page number, calls) for every page from ``first_page`` until the last one.

        The walk ends only where the server says so: "Incorrect page is set" past the last
        page, "No rows found" when the window has none. A page answered ``[]`` on the way
        (its calls were deleted while the walk went on) yields nothing, and the walk goes on.
        """
        number = first_page
        while True:
            try:
                calls = self._page(number, start, end, method)
            except NoRowsFound:
                return
            except IncorrectPage:
                if number == 0:
                    raise
                return
            if calls:
                yield number, calls
            number += 1

    def iter_calls(
        self, start: DateLike, end: DateLike | None = None, *, method: Method = "get"
    ) -> Iterator[CallRecord]:
        """Every call of the window, page after page, in the server's order.

        ``end=None`` means "now" on every request: for a walk that cannot move under you,
        pass a fixed ``end`` (the export does).
        """
        for _, calls in self.iter_pages(start, end, method=method):
            yield from calls

    # -- v4: the changes feed ---------------------------------------------------------------

    def changes(
        self,
        after: str | None = None,
        *,
        scope: Scope | None = None,
        limit: int | None = None,
        stream: bool = True,
    ) -> Changes:
        """Every change of the calls the key sees after the cursor ``after`` (from the
        beginning without it: every current call once, as an upsert), in commit order, until
        the feed has no more (``hasMore`` false); ``GET /api/v4/calls/changes``.

        ``stream=True`` asks for NDJSON (``limit`` changes an answer, 100,000 by default) and
        falls back to JSON pages when the server will not stream; ``stream=False`` reads JSON
        pages (``limit`` up to 10,000, the server's default 1,000). A stream that ends without
        its last line is asked again from the last change received; failures are retried as
        the v3 pages are. ``scope="withRole"`` adds the calls of the accounts that granted the
        key a role. Raises ``CursorExpired`` (410: start over without ``after``),
        ``FeedNotOffered`` (404: a v3-only server) and ``UserNotRecognized`` (401).

        The result is an iterator of ``Change`` whose ``cursor`` attribute is where to resume
        after the changes taken so far (once it is exhausted: the feed's final ``next``).
        """
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        feed = Changes(after)
        feed._iterator = self._changes(feed, after, scope, limit, stream)
        return feed

    def _changes(
        self,
        feed: Changes,
        after: str | None,
        scope: Scope | None,
        limit: int | None,
        stream: bool,
    ) -> Iterator[Change]:
        url = self.v4_endpoint + "calls/changes"
        cursor, streamed, attempt = after, stream, 0
        while True:
            params: dict[str, str] = {}
            if cursor is not None:
                params["after"] = cursor
            if scope is not None:
                params["scope"] = scope
            if streamed or limit is not None:
                params["limit"] = str(limit or STREAM_LIMIT)
            what = "changes" + (f" after {cursor[:24]}..." if cursor else "")
            progressed = False
            try:
                if streamed:
                    try:
                        with self._http.stream(
                            "GET", url, params=params, headers=self._v4_headers(NDJSON)
                        ) as response:
                            if not self._feed_ok(response, what, streamed=True):
                                streamed = False  # the server will not stream: JSON pages
                                continue
                            if NDJSON not in response.headers.get("content-type", ""):
                                page = self._feed_page(response.read(), what)
                                for change in page.changes:
                                    feed.cursor = change.cursor
                                    yield change
                                following, more = page.next, page.hasMore
                            else:
                                trailer: _Trailer | None = None
                                for item in self._feed_lines(response, what):
                                    if isinstance(item, _Trailer):
                                        trailer = item
                                        continue
                                    feed.cursor = cursor = item.cursor
                                    progressed = True
                                    yield item
                                if trailer is None:
                                    cut = ConnectionFailed(
                                        f"{what} from {self.v4_endpoint}: the stream ended "
                                        "before its last line"
                                    )
                                    raise _Retry(cut)
                                following, more = trailer.next, trailer.hasMore
                    except _RETRIED_TRANSPORT_ERRORS as exc:
                        reason = str(exc) or type(exc).__name__
                        failed = ConnectionFailed(f"{what} from {self.v4_endpoint}: {reason}")
                        raise _Retry(failed) from None
                    except httpx2.TransportError as exc:
                        raise ConnectionFailed(f"{what} from {self.v4_endpoint}: {exc}") from None
                    except httpx2.HTTPError as exc:
                        raise InvalidResponse(f"{what} from {self.v4_endpoint}: {exc}") from None
                else:
                    page = self._feed_page(self._v4_get(url, params, what), what)
                    for change in page.changes:
                        feed.cursor = change.cursor
                        yield change
                    following, more = page.next, page.hasMore
            except _Retry as retry:
                if progressed:
                    attempt = 0  # the stream got somewhere: go on from its last change
                self._wait_to_retry(what, retry, attempt)
                attempt += 1
                continue
            attempt = 0
            feed.cursor = cursor = following
            if not more:
                return

    def _v4_headers(self, accept: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}", "accept": accept}

    def _v4_get(self, url: str, params: dict[str, str], what: str) -> bytes:
        """The body of a JSON GET of v4, retried as the v3 pages are."""

        def attempt() -> bytes:
            try:
                try:
                    response = self._http.get(
                        url, params=params, headers=self._v4_headers("application/json")
                    )
                except _RETRIED_TRANSPORT_ERRORS as exc:
                    reason = str(exc) or type(exc).__name__
                    failed = ConnectionFailed(f"{what} from {self.v4_endpoint}: {reason}")
                    raise _Retry(failed) from None
                self._feed_ok(response, what, streamed=False)
                return response.content
            except httpx2.TransportError as exc:
                raise ConnectionFailed(f"{what} from {self.v4_endpoint}: {exc}") from None
            except httpx2.HTTPError as exc:
                raise InvalidResponse(f"{what} from {self.v4_endpoint}: {exc}") from None

        return self._retrying(what, attempt)

    def _feed_ok(self, response: httpx2.Response, what: str, *, streamed: bool) -> bool:
        """True for a 200; False when a stream was refused (ask for JSON pages instead);
        otherwise the error: retried (429, 5xx) or raised."""
        status = response.status_code
        if status == 200:
            return True
        body = response.read()
        problem = _problem_of(body)
        detail = problem.detail or problem.title or response.reason_phrase
        if streamed and (status == 406 or (status == 400 and problem.parameter == "limit")):
            return False
        if status == 429 or 500 <= status <= 599:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise _Retry(server_error(status, detail, retry_after, None), retry_after)
        if status == 401:
            raise UserNotRecognized(detail)
        if status == 404:
            raise FeedNotOffered(
                f"{what}: HTTP 404 from {self.v4_endpoint}: the server does not offer "
                "API v4's changes feed (a v3-only server?)"
            )
        if status == 410:
            raise CursorExpired(f"{CursorExpired.message} (the server said: {detail})")
        raise InvalidResponse(f"{what}: HTTP {status} from {self.v4_endpoint}: {detail}")

    def _feed_page(self, body: bytes, what: str) -> _FeedPage:
        try:
            page = _feed_page_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise InvalidResponse(
                f"{what}: a change the v4 contract does not allow: {exc}"
            ) from None
        except msgspec.DecodeError as exc:
            if body.lstrip()[:1] == b"{":  # cut short by a dropped connection
                cut = ConnectionFailed(f"{what} from {self.v4_endpoint}: the answer ended early")
                raise _Retry(cut) from None
            raise InvalidResponse(f"{what}: the answer is not JSON: {exc}") from None
        for change in page.changes:
            _check_change(change, what)
        return page

    def _feed_lines(self, response: httpx2.Response, what: str) -> Iterator[Change | _Trailer]:
        """The lines of an NDJSON answer; a line that does not decode is a cut (retried) when
        it is the last one, and an error otherwise."""
        broken: str | None = None
        ended = False
        for line in response.iter_lines():
            if not line.strip():
                continue
            if broken is not None or ended:
                problem = broken or "a line after the last one"
                raise InvalidResponse(f"{what}: not a change of the v4 feed: {problem}")
            data = line.encode()
            try:
                change = _change_decoder.decode(data)
            except msgspec.DecodeError as exc:
                try:
                    yield _trailer_decoder.decode(data)
                    ended = True
                except msgspec.DecodeError:
                    broken = str(exc)
                continue
            _check_change(change, what)
            yield change
        if broken is not None:
            cut = ConnectionFailed(f"{what} from {self.v4_endpoint}: the stream ended mid-line")
            raise _Retry(cut)

    # -- plumbing ---------------------------------------------------------------------------

    def _fetch(self, url: str, what: str) -> list[CallRecord]:
        return self._retrying(what, lambda: self._attempt(url, what))

    def _retrying(self, what: str, attempt: Callable[[], _T]) -> _T:
        """``attempt()``, again after each transient failure (``_Retry``), up to ``retries``
        times, waiting as ``delay`` says."""
        tries = 0
        while True:
            try:
                return attempt()
            except _Retry as retry:
                self._wait_to_retry(what, retry, tries)
                tries += 1

    def _wait_to_retry(self, what: str, retry: _Retry, tries: int) -> None:
        """Wait before retry number ``tries + 1``, saying so; the error once none is left."""
        if tries >= self.retries:
            raise retry.error from None
        delay = self.delay(tries, retry.retry_after)
        log.warning(
            "%s: %s; retrying in %.1f s (retry %d of %d)",
            what,
            retry.error,
            delay,
            tries + 1,
            self.retries,
        )
        self._sleep(delay)

    def _attempt(self, url: str, what: str) -> list[CallRecord]:
        try:
            response = self._http.get(url)
        except _RETRIED_TRANSPORT_ERRORS as exc:
            reason = str(exc) or type(exc).__name__
            raise _Retry(ConnectionFailed(f"{what} from {self.endpoint}: {reason}")) from None
        except httpx2.TransportError as exc:  # not worth retrying: a bad scheme, a proxy...
            raise ConnectionFailed(f"{what} from {self.endpoint}: {exc}") from None
        except httpx2.HTTPError as exc:  # too many redirects, an undecodable body
            raise InvalidResponse(f"{what} from {self.endpoint}: {exc}") from None
        status = response.status_code
        if status == 429 or 500 <= status <= 599:
            message, request_id = _envelope_message(response.content)
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            failure = server_error(
                status, message or response.reason_phrase, retry_after, request_id
            )
            raise _Retry(failure, retry_after)
        if status != 200:
            raise InvalidResponse(f"{what}: HTTP {status} from {self.endpoint} (is it a v3 API?)")
        try:
            answer = _page_decoder.decode(response.content)
        except msgspec.ValidationError as exc:
            raise InvalidResponse(
                f"{what}: a call record the contract does not allow: {exc}"
            ) from None
        except msgspec.DecodeError as exc:
            if response.content.lstrip()[:1] in {b"[", b"{"}:  # cut short by a dropped connection
                cut = ConnectionFailed(
                    f"{what} from {self.endpoint}: the answer ended early: {exc}"
                )
                raise _Retry(cut) from None
            raise InvalidResponse(f"{what}: the answer is not JSON: {exc}") from None
        if isinstance(answer, _Envelope):
            raise api_error(answer.inbound.error)
        return answer

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        backoff = min(self.max_backoff, self.backoff * 2.0**attempt)
        backoff *= self._random.uniform(0.5, 1.0)
        return max(backoff, retry_after or 0.0)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.endpoint!r}, key={self.api_key[:4]}...)"


def _user_agent() -> str:
    try:
        return f"calltrack-client/{version('calltrack')}"
    except PackageNotFoundError:
        return "calltrack-client"


def api_endpoint(base_url: str) -> str:
    """The v3 endpoint for a server URL: ``http://host`` -> ``http://host/api/``."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"the server URL must be http:// or https://, got {base_url!r}")
    path = parts.path
    if path.endswith("/api"):
        path += "/"
    elif not path.endswith(("/api/", "/index.php")):
        path = path.rstrip("/") + "/api/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def v4_endpoint(endpoint: str) -> str:
    """The v4 base for a v3 endpoint: ``http://host/api/`` -> ``http://host/api/v4/``."""
    return endpoint.removesuffix("index.php").rstrip("/") + "/v4/"


def _check_change(change: Change, what: str) -> None:
    if (change.op == "upsert") != (change.call is not None):
        raise InvalidResponse(
            f"{what}: change {change.cursor[:24]}... is {change.op!r} "
            f"{'without' if change.call is None else 'with'} a call"
        )


def _problem_of(body: bytes) -> _Problem:
    try:
        return _problem_decoder.decode(body)
    except msgspec.DecodeError:
        return _Problem()


def is_permanent(error: BaseException) -> bool:
    """Whether running the same request again cannot help: a documented error answer (a wrong
    key, a bad date...) or an answer outside the protocol (HTTP 4xx other than 429, not JSON).

    Connection failures, HTTP 5xx and 429 (once the retries are spent) and interruptions are
    transient: the same export, resumed later, may well succeed.
    """
    return isinstance(error, ApiError | InvalidResponse)


def check_key(api_key: str) -> None:
    """ValueError unless the key has the v3 shape (the key itself is never shown)."""
    if not KEY_RE.fullmatch(api_key):
        found = f"{len(api_key)} characters"
        if len(api_key) == 16:
            found += ", not all of them a-z or 0-9"
        raise ValueError(f"an API key is 16 characters, each a-z or 0-9 (this one has {found})")


def check_window(start: str, end: str | None, zone: ZoneInfo) -> None:
    """ValueError when the window ``start``..``end`` (time segments) holds no second.

    Read as a v3 server reads them: a date is its first second for ``start``, its last one
    for ``end``, in the service time zone.
    """
    if end is None:
        return
    first, last = _instant(start, zone, end_of_day=False), _instant(end, zone, end_of_day=True)
    if first > last:
        raise ValueError(f"the window is empty: from {start} is after to {end}")


def _instant(segment: str, zone: ZoneInfo, *, end_of_day: bool) -> int:
    if segment.isdigit():
        return int(segment)
    day = date.fromisoformat(segment)
    moment = datetime.combine(day, datetime.max.time() if end_of_day else datetime.min.time())
    return int(moment.replace(tzinfo=zone).timestamp())


def time_segment(value: DateLike, zone: ZoneInfo) -> str:
    """A ``from``/``to`` segment: a date stays a date, a datetime becomes a timestamp.

    Naive datetimes are in the service time zone ``zone``. Strings may be a timestamp, a
    ``YYYY-MM-DD`` date, or an ISO date-time (``2020-05-01 10:00:00``, ``...T...+03:00``).
    """
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=zone)
        return str(int(moment.timestamp()))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"expected a date, datetime, timestamp or string, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a timestamp cannot be negative: {value}")
        return str(value)
    text = value.strip()
    if text.isascii() and (text.isdigit() or _DATE_RE.fullmatch(text)):
        return text
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a date: {value!r} (use YYYY-MM-DD, a unix timestamp or an ISO date-time)"
        ) from None
    return time_segment(parsed, zone)


def checked_segment(value: DateLike, zone: ZoneInfo) -> str:
    """``time_segment``, and ValueError for what a v3 server would refuse: an impossible date
    (``2020-02-30``) or a timestamp longer than 18 digits. ``Client.page`` sends such values
    as given (the server's answer is the authority); the export checks them before asking.
    """
    segment = time_segment(value, zone)
    if segment.isdigit() and len(segment) > MAX_TIMESTAMP_DIGITS:
        raise ValueError(f"not a timestamp: {value!r} has more than 18 digits")
    if not segment.isdigit():
        try:
            date.fromisoformat(segment)
        except ValueError:
            raise ValueError(f"not a date: {value!r} (there is no such day)") from None
    return segment


def _envelope_message(body: bytes) -> tuple[str, str | None]:
    try:
        envelope = _envelope_decoder.decode(body)
    except msgspec.DecodeError:
        return "", None
    return envelope.inbound.error, envelope.inbound.requestId or None
