"""Fixtures for tests in a real browser: Debian's Chromium (``apt-get install chromium``),
driven by Playwright as a system browser. Nothing here downloads a browser.

- ``chromium``: one headless Chromium for the browser tests, on a fresh profile.
- ``make_context`` / ``browser_context``: isolated browser contexts, each one another visitor
  (own cookies, storage and cache); the pages of one context are that visitor's tabs.
- ``expect``: Playwright's waiting assertions (imported here, so that a run without the
  package skips like one without a browser).
- ``live_server``: real servers for one test: ``calltrack serve`` or a static site.

Where no browser can be had, the tests that need one are skipped with a loud reason; with
``CI=true`` they fail. ``CALLTRACK_TEST_CHROMIUM`` names another Chromium binary than the one
on PATH. The run's summary says which, in a ``browser tests: ...`` line just before the stores
line that tests/conftest.py prints last.
"""

from __future__ import annotations

import contextlib
import http.server
import mimetypes
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import pytest

from tests.faults._common import Server, in_ci

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Expect

# The flags that work on these machines. Without the background-networking ones Chromium
# keeps calling Google's hosts, which the closed network refuses. Playwright gives every
# launch a fresh temporary profile (--user-data-dir) and deletes it on close.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# A wait not over by then has failed (Playwright's defaults: 30 s for actions, 5 s for expect).
TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1024, "height": 768}
INSTALL_HINT = "apt-get install chromium"


@dataclass
class BrowserState:
    """What this run learned about its browser, for the summary line."""

    requested: bool = False  # a selected test asked for the browser
    version: str | None = None  # the Chromium version that ran
    problem: str | None = None  # why there was none


_state = BrowserState()
_RAN = pytest.StashKey[bool]()

ContextFactory = Callable[..., "BrowserContext"]


def _unavailable(reason: str) -> NoReturn:
    _state.problem = " ".join(reason.split())  # one line in the summary
    if in_ci():
        pytest.fail(f"CI=true requires a browser, and none can be had: {_state.problem}")
    pytest.skip(f"no browser: {_state.problem} ({INSTALL_HINT})")


def chromium_path() -> str:
    """The Chromium binary to drive; skips (or fails, with CI=true) where there is none."""
    named = os.environ.get("CALLTRACK_TEST_CHROMIUM")
    if named:
        if Path(named).is_file() and os.access(named, os.X_OK):
            return named
        _unavailable(f"CALLTRACK_TEST_CHROMIUM={named} is not an executable file")
    found = shutil.which("chromium")
    if found is None:
        _unavailable("no chromium on PATH")
    return found


# Package scope, not session: while Playwright's sync API is started it leaves its event loop
# set as the running one in this thread, so asyncio.run() elsewhere (tests/faults/load.py)
# fails until it stops. It stops when this package's tests are done.
@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for all browser tests: starting it costs about a second, a
    context (a new visitor) a fraction of that. No asyncio.run() while it runs."""
    _state.requested = True
    try:
        from playwright.sync_api import Error, expect, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    with contextlib.ExitStack() as stack:
        try:
            playwright = stack.enter_context(sync_playwright())
            browser = playwright.chromium.launch(
                executable_path=path, args=CHROMIUM_FLAGS, headless=True, timeout=60_000
            )
        except (Error, OSError) as exc:
            _unavailable(f"{path} did not start: {str(exc).strip().splitlines()[0]}")
        stack.callback(browser.close)
        expect.set_options(timeout=TIMEOUT_MS)
        _state.version = browser.version
        yield browser


@pytest.fixture
def make_context(chromium: Browser) -> Iterator[ContextFactory]:
    """Opens isolated contexts, each another visitor (options go to ``new_context``); all are
    closed after the test."""
    opened: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = chromium.new_context(**{"viewport": VIEWPORT, **options})
        context.set_default_timeout(TIMEOUT_MS)
        opened.append(context)
        return context

    yield make
    for context in opened:
        context.close()


@pytest.fixture
def browser_context(make_context: ContextFactory) -> BrowserContext:
    """A new isolated context: one visitor, with no cookies yet."""
    return make_context()


@pytest.fixture
def expect(chromium: Browser) -> Expect:
    """Playwright's ``expect``: assertions that wait, up to TIMEOUT_MS, for the page to agree."""
    from playwright.sync_api import expect

    return expect


# -- servers -----------------------------------------------------------------------------------


class Seen(NamedTuple):
    """One request a static site answered: its path (with the query) and its headers."""

    path: str
    headers: dict[str, str]


class StaticSite:
    """A plain threaded HTTP server on 127.0.0.1: GET answers ``pages`` (path -> body, the
    query ignored; the type from the path's extension, HTML without one), 404 otherwise. Every
    request is kept in ``requests``, so a test can see what the browser sent."""

    def __init__(self, pages: Mapping[str, str | bytes]) -> None:
        self.pages = dict(pages)
        self.requests: list[Seen] = []
        self._stopped = False
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append(Seen(self.path, dict(self.headers.items())))
                path = self.path.split("?", 1)[0]
                body = site.pages.get(path)
                if body is None:
                    self.send_error(404)
                    return
                kind = mimetypes.guess_type(path)[0] or "text/html"
                if isinstance(body, str):
                    body, kind = body.encode(), f"{kind}; charset=utf-8"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")  # each visit asks again
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the requests are in ``site.requests``."""

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def url(self, path: str = "/") -> str:
        return self.base + path

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.httpd.shutdown()
            self.httpd.server_close()
            self._thread.join(timeout=10)


class LiveServers:
    """Real servers for one test, each stopped after it (also when the test fails)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._stops: list[Callable[[], None]] = []

    def calltrack(
        self, database: str | None = None, *, workers: int = 1, env: Mapping[str, str] | None = None
    ) -> Server:
        """A real `calltrack serve` in its own process group, answering when returned, on
        ``database`` or on a fresh SQLite file; its output goes to ``serve-N.log`` here."""
        number = len(self._stops)
        database = database or f"sqlite:///{self.work / f'calltrack-{number}.db'}"
        server = Server(database, self.work / f"serve-{number}.log", workers, dict(env or {}))
        self._stops.append(server.stop)
        return server

    def static(self, pages: Mapping[str, str | bytes]) -> StaticSite:
        """A static site answering ``pages`` (see StaticSite)."""
        site = StaticSite(pages)
        self._stops.append(site.stop)
        return site

    def close(self) -> None:
        for stop in reversed(self._stops):
            stop()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServers]:
    servers = LiveServers(tmp_path)
    yield servers
    servers.close()


# -- the run's summary ---------------------------------------------------------------------------


def browser_line(state: BrowserState, in_ci: bool) -> str:
    """The summary line: which browser the tests ran in, or why they did not."""
    if state.problem is not None:
        verdict = "FAILED (CI=true requires a browser: " if in_ci else "SKIPPED ("
        return f"browser tests: {verdict}{state.problem})"
    if state.version is not None:
        return f"browser tests: ran in Chromium {state.version}"
    if state.requested:  # the fixture broke in a way it does not report: the errors say how
        return "browser tests: FAILED (the browser fixture did not finish)"
    return "browser tests: none selected"


def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[_RAN] = not session.config.option.collectonly


@pytest.hookimpl(tryfirst=True)  # before tests/conftest.py prints the stores line, the last
def pytest_unconfigure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not config.stash.get(_RAN, False):
        return
    if _state.problem is not None:
        bar = "!" * 78
        reporter.write_line(bar, red=True, bold=True)
        reporter.write_line(
            f"Browser tests need a Chromium that starts: {INSTALL_HINT}"
            " (with CI=true they fail without one).",
            red=True,
        )
        reporter.write_line(bar, red=True, bold=True)
    reporter.write_line(browser_line(_state, in_ci()), red=_state.problem is not None, bold=True)
