"""The installed `calltrack serve` as a user runs it: a real HTTP server in a subprocess."""

from __future__ import annotations

import json
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from calltrack import __version__
from tests.faults._common import Server, cli
from tests.test_home import Page


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'served.db'}"


@pytest.fixture
def demo_keys(database: str) -> dict[str, object]:
    return cli(database, "demo", "--no-serve", "--calls", "1200")


@pytest.fixture
def server(database: str, demo_keys: dict[str, object], tmp_path: Path) -> Iterator[Server]:
    running = Server(database, tmp_path / "server.log", workers=2)
    yield running
    running.stop()


def test_demo_paths_answer_over_real_http(server: Server, demo_keys: dict[str, object]) -> None:
    examples = demo_keys["examples"]
    assert isinstance(examples, list)
    assert examples
    for example in examples:
        status, body = fetch(server.base + example["path"])
        calls = json.loads(body)
        assert status == 200
        assert isinstance(calls, list)
        assert calls
        assert calls[0]["page"] == 0


def test_access_log_shows_requests_but_never_the_key(
    server: Server, demo_keys: dict[str, object]
) -> None:
    keys = demo_keys["keys"]
    assert isinstance(keys, dict)
    key = keys["demo-dealer"]
    fetch(f"{server.base}/api/?json/v3/{key}/call/get/0/2020-01-01")
    fetch(f"{server.base}/api/index.php?json/v3/{key}/call/get/0/2020-01-01")
    server.stop()
    log = server.log.read_text()
    assert "/call/get/0/2020-01-01" in log
    assert "<key>" in log
    assert key not in log


def test_revoked_key_stops_working_in_every_worker_at_once(
    server: Server, demo_keys: dict[str, object], database: str
) -> None:
    keys = demo_keys["keys"]
    assert isinstance(keys, dict)
    url = f"{server.base}/api/?json/v3/{keys['demo-clinic']}/call/get/0/2020-01-01"
    assert json.loads(fetch(url)[1])[0]["page"] == 0
    cli(database, "key", "revoke", str(keys["demo-clinic"]))
    answers = [json.loads(fetch(url)[1]) for _ in range(20)]  # spread over both workers
    assert all(a["inbound"]["error"] == "User is not recognized" for a in answers)


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_an_oversized_url_is_refused_without_being_buffered(server: Server) -> None:
    target = b"/api/?json/v3/" + b"x" * 100_000
    answer = raw_request(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    assert fetch(server.base + "/healthz")[0] == 200  # the worker is still serving


def test_oversized_headers_are_refused(server: Server) -> None:
    # 300 KB: far more than the server reads before refusing, so without the lingering close
    # the unread bytes make the kernel reset the connection and the 400 is lost.
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 1000) for i in range(300))
    answer = raw_request(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 400")


def test_the_root_page_says_what_the_server_is_and_its_link_answers(server: Server) -> None:
    status, body = fetch(server.base + "/")
    page = Page(body.decode())
    assert status == 200
    assert f"calltrack {__version__}" in page.text
    assert "docs/api.md" in page.text
    assert page.links == ["console/", "healthz"]
    answers = {link: fetch(urllib.parse.urljoin(server.base + "/", link)) for link in page.links}
    assert answers["healthz"] == (200, b"ok\n")
    console_status, console_page = answers["console/"]  # the sign-in form, after a redirect
    assert console_status == 200
    assert b'action="/console/sign-in"' in console_page
    head = raw_request(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head_lines = head.split(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert head_lines[0] == b"http/1.1 200 ok"
    assert b"content-length: %d" % len(body) in head_lines
    assert head.endswith(b"\r\n\r\n")  # no body
