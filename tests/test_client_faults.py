"""The client against a scripted fake server: retries, backoff, dropped bodies, every error."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypedDict, Unpack

import msgspec
import pytest

from calltrack.client import (
    ApiError,
    CallRecord,
    Client,
    ConnectionFailed,
    EntityDoesNotExist,
    IncorrectPage,
    InternalServerError,
    InvalidResponse,
    MethodDoesNotExist,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TypeNotAvailable,
    UnknownApiError,
    UserNotRecognized,
    WrongApiVersion,
    WrongEndDate,
    WrongStartDate,
)
from calltrack.render.json import error_body, internal_error_body
from calltrack.retry_after import parse_retry_after

KEY = "abcd1234efgh5678"


@dataclass
class Reply:
    """One scripted answer. ``cut_at`` sends only that many body bytes, then drops the
    connection; ``length=False`` omits Content-Length (the body ends when the socket closes)."""

    status: int = 200
    body: bytes = b"[]"
    headers: dict[str, str] = field(default_factory=dict)
    cut_at: int | None = None
    length: bool = True
    delay: float = 0.0


def envelope(message: str, status: int = 200, **headers: str) -> Reply:
    return Reply(status, error_body(message), headers)


def record(uid: str, when: str = "2020-05-01 10:00:00", page: int = 0) -> CallRecord:
    return CallRecord(
        page=page, universalId=uid, serviceType="calltracking", status="success", callTime=when
    )


class FakeServer:
    """A real HTTP server on 127.0.0.1 (ephemeral port, own thread) that follows a script.

    Requests take the next ``script`` reply; when the script is empty, the server answers as
    a v3 server over ``calls`` in pages of ``page_size`` (``faults[page]`` replies first),
    and 404 to API v4's paths (``v4_requests``), as a server from before v4.
    """

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.faults: dict[int, deque[Reply]] = {}
        self.calls: list[CallRecord] = []
        self.page_size = 3
        self.requests: list[str] = []
        self.v4_requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/api/v4/") and not owner.script:
                    owner.v4_requests.append(self.path)
                    owner.send(self, Reply(404, b"Not Found"))
                    return
                query = self.path.partition("?")[2]
                owner.requests.append(query)
                owner.send(self, owner.answer(query))

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def pages(self) -> list[int]:
        """The page numbers requested, in order."""
        return [int(query.split("/")[5]) for query in self.requests]

    def answer(self, query: str) -> Reply:
        if self.script:
            return self.script.popleft()
        page = int(query.split("/")[5])
        if self.faults.get(page):
            return self.faults[page].popleft()
        chunk = self.calls[page * self.page_size : (page + 1) * self.page_size]
        if not chunk:
            return envelope("No rows found" if page == 0 else "Incorrect page is set")
        stamped = [msgspec.structs.replace(call, page=page) for call in chunk]
        return Reply(body=msgspec.json.encode(stamped))

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        time.sleep(reply.delay)
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        if reply.length:
            handler.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        body = reply.body if reply.cut_at is None else reply.body[: reply.cut_at]
        try:
            handler.wfile.write(body)
            handler.wfile.flush()
        except OSError:
            return  # the client gave up first (a timeout test)
        if reply.cut_at is not None or not reply.length:
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Sleeps(list[float]):
    """A fake ``sleep`` that records the delays asked for."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


class ClientOptions(TypedDict, total=False):
    """The Client keyword arguments these tests vary."""

    timeout: float
    retries: int
    backoff: float
    max_backoff: float


def client_for(url: str, sleeps: Sleeps, **options: Unpack[ClientOptions]) -> Client:
    quick: ClientOptions = {"backoff": 0.1, "retries": 3, "timeout": 5.0, **options}
    return Client(url, KEY, sleep=sleeps, **quick)


def ids(calls: Sequence[CallRecord]) -> list[str]:
    return [call.universalId for call in calls]


def test_a_503_then_success_is_retried_after_a_backoff(server: FakeServer, sleeps: Sleeps) -> None:
    server.calls = [record("1"), record("2")]
    server.script.append(envelope("Service temporarily unavailable", 503))
    with client_for(server.url, sleeps) as client:
        assert ids(client.page(0, "2020-05-01")) == ["1", "2"]
    assert len(server.requests) == 2
    assert len(sleeps) == 1
    assert 0.05 <= sleeps[0] <= 0.1  # backoff 0.1 times a jitter of 0.5-1


def test_a_429_waits_at_least_what_retry_after_asks(server: FakeServer, sleeps: Sleeps) -> None:
    server.calls = [record("1")]
    server.script.append(envelope("Too many requests", 429, **{"Retry-After": "1"}))
    with client_for(server.url, sleeps) as client:
        assert ids(client.page(0, "2020-05-01")) == ["1"]
    assert sleeps == [1.0]


def test_backoff_doubles_per_retry_up_to_its_cap(sleeps: Sleeps) -> None:
    with client_for("http://127.0.0.1:9", sleeps, backoff=1.0, max_backoff=4.0) as client:
        delays = [client.delay(attempt) for attempt in range(5)]
        assert client.delay(0, retry_after=7.0) == 7.0
    for delay, full in zip(delays, [1, 2, 4, 4, 4], strict=True):
        assert full / 2 <= delay <= full


def test_a_connection_dropped_mid_page_is_retried(server: FakeServer, sleeps: Sleeps) -> None:
    server.calls = [record(str(n)) for n in range(3)]
    body = msgspec.json.encode(server.calls)
    server.script.append(Reply(body=body, cut_at=len(body) // 2))
    with client_for(server.url, sleeps) as client:
        assert ids(client.page(0, "2020-05-01")) == ["0", "1", "2"]
    assert len(server.requests) == 2
    assert len(sleeps) == 1


def test_a_body_cut_short_without_a_length_is_retried(server: FakeServer, sleeps: Sleeps) -> None:
    server.calls = [record(str(n)) for n in range(3)]
    body = msgspec.json.encode(server.calls)
    server.script.append(Reply(body=body[:40], length=False))
    with client_for(server.url, sleeps) as client:
        assert ids(client.page(0, "2020-05-01")) == ["0", "1", "2"]
    assert len(sleeps) == 1


def test_a_timeout_is_retried(server: FakeServer, sleeps: Sleeps) -> None:
    server.calls = [record("1")]
    server.script.append(Reply(body=b"[]", delay=0.5))
    with client_for(server.url, sleeps, timeout=0.1) as client:
        assert ids(client.page(0, "2020-05-01")) == ["1"]
    assert len(sleeps) == 1


def test_a_refused_connection_is_retried_then_raises_connection_failed(sleeps: Sleeps) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once it is closed
    with (
        client_for(f"http://127.0.0.1:{port}", sleeps, retries=2) as client,
        pytest.raises(ConnectionFailed) as raised,
    ):
        client.page(0, "2020-05-01")
    assert len(sleeps) == 2
    assert KEY not in str(raised.value)


def test_retries_give_up_with_the_servers_error(server: FakeServer, sleeps: Sleeps) -> None:
    for _ in range(4):
        server.script.append(
            envelope("Service temporarily unavailable", 503, **{"Retry-After": "2"})
        )
    with client_for(server.url, sleeps) as client, pytest.raises(ServiceUnavailable) as raised:
        client.page(0, "2020-05-01")
    assert len(server.requests) == 4  # the first try and 3 retries
    assert sleeps[0] >= 2.0
    assert raised.value.status_code == 503
    assert raised.value.retry_after == 2.0
    assert raised.value.server_message == "Service temporarily unavailable"
    assert isinstance(raised.value, ServerError)


def test_a_500_names_the_servers_request_id(server: FakeServer, sleeps: Sleeps) -> None:
    server.script.append(Reply(500, internal_error_body("0123456789abcdef")))
    with (
        client_for(server.url, sleeps, retries=0) as client,
        pytest.raises(InternalServerError) as raised,
    ):
        client.page(0, "2020-05-01")
    assert raised.value.request_id == "0123456789abcdef"
    assert "0123456789abcdef" in str(raised.value)


def test_a_429_after_the_retries_is_too_many_requests(server: FakeServer, sleeps: Sleeps) -> None:
    server.script.append(envelope("Too many requests", 429, **{"Retry-After": "3"}))
    with client_for(server.url, sleeps, retries=0) as client, pytest.raises(TooManyRequests):
        client.page(0, "2020-05-01")
    assert sleeps == []


def test_an_unexpected_status_is_not_retried(server: FakeServer, sleeps: Sleeps) -> None:
    server.script.append(Reply(404, b"not found"))
    with client_for(server.url, sleeps) as client, pytest.raises(InvalidResponse) as raised:
        client.page(0, "2020-05-01")
    assert len(server.requests) == 1
    assert "404" in str(raised.value)
    assert sleeps == []


def test_a_page_that_is_not_json_is_not_retried(server: FakeServer, sleeps: Sleeps) -> None:
    server.script.append(Reply(body=b"<html>Please log in</html>"))
    with client_for(server.url, sleeps) as client, pytest.raises(InvalidResponse) as raised:
        client.page(0, "2020-05-01")
    assert "not JSON" in str(raised.value)
    assert len(server.requests) == 1


def test_a_record_outside_the_contract_is_invalid_and_not_retried(
    server: FakeServer, sleeps: Sleeps
) -> None:
    server.script.append(Reply(body=b'[{"universalId": "1", "duration": "long"}]'))
    with client_for(server.url, sleeps) as client, pytest.raises(InvalidResponse) as raised:
        client.page(0, "2020-05-01")
    assert "duration" in str(raised.value)
    assert len(server.requests) == 1


DOCUMENTED: list[tuple[str, type[ApiError]]] = [
    ("Type to return is not available", TypeNotAvailable),
    ("It is wrong API version", WrongApiVersion),
    ("User is not recognized", UserNotRecognized),
    ("Entity does not exist", EntityDoesNotExist),
    ("Method does not exist", MethodDoesNotExist),
    ("Incorrect page is set", IncorrectPage),
    ("Start date has wrong type. Possible format is 'Y-m-d' or timestamp", WrongStartDate),
    ("End date has wrong type. Possible format is 'Y-m-d' or timestamp", WrongEndDate),
    ("Something new", UnknownApiError),
]


@pytest.mark.parametrize(("message", "error"), DOCUMENTED)
def test_each_documented_error_raises_its_exception_with_the_servers_message(
    server: FakeServer, sleeps: Sleeps, message: str, error: type[ApiError]
) -> None:
    server.script.append(envelope(message))
    with client_for(server.url, sleeps) as client, pytest.raises(error) as raised:
        client.page(1, "2020-05-01")
    assert str(raised.value) == message
    assert type(raised.value) is error
    assert len(server.requests) == 1  # a documented answer is final
    assert sleeps == []


def test_no_rows_found_is_an_empty_result(server: FakeServer, sleeps: Sleeps) -> None:
    with client_for(server.url, sleeps) as client:
        assert client.page(0, "2020-05-01") == []
        assert list(client.iter_calls("2020-05-01")) == []
    assert server.pages() == [0, 0]


def test_iter_calls_stops_at_incorrect_page_after_the_last_page(
    server: FakeServer, sleeps: Sleeps
) -> None:
    server.calls = [record(str(n)) for n in range(7)]
    with client_for(server.url, sleeps) as client:
        assert ids(list(client.iter_calls("2020-05-01", "2020-05-02"))) == list("0123456")
    assert server.pages() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("empty", "walked", "asked"),
    [(1, ["0", "1", "2", "6"], [0, 1, 2, 3]), (0, ["3", "4", "5", "6"], [0, 1, 2, 3])],
    ids=["middle", "first"],
)
def test_an_empty_page_does_not_end_the_walk(
    server: FakeServer, sleeps: Sleeps, empty: int, walked: list[str], asked: list[int]
) -> None:
    # Its calls were deleted while the walk went on: the server answers [] for the page.
    server.calls = [record(str(n)) for n in range(7)]
    server.faults[empty] = deque([Reply(body=b"[]")])
    with client_for(server.url, sleeps) as client:
        pages = list(client.iter_pages("2020-05-01", "2020-05-02"))
    assert [number for number, _ in pages] == [n for n in (0, 1, 2) if n != empty]
    assert ids([call for _, calls in pages for call in calls]) == walked
    assert server.pages() == asked  # on to "Incorrect page is set"


def test_the_request_speaks_the_v3_protocol(server: FakeServer, sleeps: Sleeps) -> None:
    with client_for(server.url + "/prefix", sleeps) as client:
        client.page(0, "2020-05-01", 1588345200, method="getWithRole")
    assert server.requests == [f"json/v3/{KEY}/call/getWithRole/0/2020-05-01/1588345200"]


def test_retry_after_may_be_an_http_date() -> None:
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    seconds = parse_retry_after(later)
    assert seconds is not None
    assert 25 <= seconds <= 31
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("soon") is None
