"""The v3 client: requests, retries with backoff, and typed pages of calls.

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
from typing import Final, Literal, Self
from urllib.parse import quote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import httpx2
import msgspec

from calltrack.client._errors import (
    ApiError,
    ConnectionFailed,
    IncorrectPage,
    InvalidResponse,
    NoRowsFound,
    api_error,
    server_error,
)
from calltrack.model import CallRecord
from calltrack.retry_after import parse_retry_after

Method = Literal["get", "getByRole", "getWithRole"]
METHODS: Final[tuple[Method, ...]] = ("get", "getByRole", "getWithRole")
DateLike = date | datetime | int | str
DEFAULT_TIMEZONE: Final = "Europe/Moscow"
MAX_PAGE: Final = 999_999_999  # the contract's page number has at most 9 digits

log = logging.getLogger("calltrack.client")


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

    # -- plumbing ---------------------------------------------------------------------------

    def _fetch(self, url: str, what: str) -> list[CallRecord]:
        attempt = 0
        while True:
            try:
                return self._attempt(url, what)
            except _Retry as retry:
                if attempt >= self.retries:
                    raise retry.error from None
                delay = self.delay(attempt, retry.retry_after)
                log.warning(
                    "%s: %s; retrying in %.1f s (retry %d of %d)",
                    what,
                    retry.error,
                    delay,
                    attempt + 1,
                    self.retries,
                )
                self._sleep(delay)
                attempt += 1

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
