"""Webhook deliveries for real, on SQLite and PostgreSQL: live calls and call/put changes
become signed requests to real HTTP receivers on 127.0.0.1, sent by a running deliverer,
through every way a receiver can fail; nothing is lost, nothing arrives out of order.

The receivers verify with the standardwebhooks package and deduplicate by webhook-id, as
the documentation tells receivers to. The retry schedule is shrunk to fractions of a second.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.from_thread
import anyio.to_thread
import msgspec
import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from calltrack.cli import main
from calltrack.hooks.deliverer import Deliverer
from calltrack.hooks.signing import new_secret
from calltrack.importer import import_bytes
from calltrack.model import StoredCall
from calltrack.store import ImportResult, Store, Window
from calltrack.store.hooks import AttemptResult, IssuedHook, unix_ms
from calltrack.telephony.service import simulate_call
from tests.conftest import StoreFactory, new_account

EVENTS = ("BEFORE_CALL_START", "AFTER_CALL_FINISH", "CALL_UPDATED")
NUMBER = "74950000001"
CALLER = "74991234567"
# 0.1 s, 0.2 s, then every 0.3 s for about 9 s: enough for every test's receiver to recover.
SCHEDULE = ",".join(["0.1", "0.2", *["0.3"] * 30])
HOOKS = {
    "hooks_schedule": SCHEDULE,
    "hooks_timeout": 1.0,
    "hooks_allow_hosts": "127.0.0.1",
    "hooks_deliverer": "workers",  # the app's own deliverer, where a test serves the app
}
DEADLINE = 20.0  # seconds any wait may take before the test fails (not a timing claim)

Reply = int | tuple[int, dict[str, str]] | Literal["close", "slow"]


# -- a receiver ------------------------------------------------------------------------------


@dataclass
class Hit:
    """One request a receiver got."""

    method: str
    target: str  # path and query, as received
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() of its arrival
    accepted: bool = False  # the receiver took it (answered, or was answering, 2xx)

    @property
    def message_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def signed(self) -> bytes:
        """What the signature covers: the body, or the query string of GET and DELETE."""
        return self.body if self.method in ("POST", "PUT") else urlsplit(self.target).query.encode()

    @property
    def content(self) -> dict[str, Any]:
        """``{"event": ..., "call": {...}}``; for GET and DELETE, the query's fields as
        ``call`` (the endpoint's own parameters included)."""
        if self.method in ("POST", "PUT"):
            decoded: dict[str, Any] = json.loads(self.body)
            return decoded
        fields = dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))
        return {"event": fields.pop("event", None), "call": fields}

    @property
    def event(self) -> str:
        return str(self.content["event"])

    @property
    def call_id(self) -> str:
        return str(self.content["call"]["universalId"])

    def verify(self, secret: str) -> None:
        """What a receiver does first: raises WebhookVerificationError unless signed by it."""
        Webhook(secret).verify(self.signed, self.headers, json_parse=False)


Respond = Callable[[Hit, int], Reply]  # (the request, how many came before with its id)


def always(reply: Reply) -> Respond:
    return lambda hit, attempt: reply


def first_fails(reply: Reply) -> Respond:
    """``reply`` to the first attempt of every delivery, 200 to the next ones."""
    return lambda hit, attempt: reply if attempt == 0 else 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A real HTTP server on 127.0.0.1 (HTTP/1.1, keep-alive) that records every request
    and answers as ``respond`` says: a status (with headers), "close" (the connection is
    closed without an answer) or "slow" (taken, then answered 200 after ``slow_seconds``)."""

    def __init__(
        self, respond: Respond | None = None, port: int = 0, slow_seconds: float = 1.5
    ) -> None:
        self.respond = respond or always(200)
        self.port = port or free_port()
        self.slow_seconds = slow_seconds
        self.lock = threading.Lock()
        self.hits: list[Hit] = []
        self.accepted: dict[str, Hit] = {}  # webhook-id: the request first taken
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                receiver._handle(self)

            do_PUT = do_GET = do_DELETE = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = self._thread = None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in handler.headers.items()}
        hit = Hit(handler.command, handler.path, headers, body, time.time())
        with self.lock:
            attempt = sum(1 for h in self.hits if h.message_id == hit.message_id)
            self.hits.append(hit)
        reply = self.respond(hit, attempt)
        if reply == "close":
            handler.close_connection = True
            return
        status, extra = reply if isinstance(reply, tuple) else (200, {})
        if isinstance(reply, int):
            status = reply
        if reply == "slow" or 200 <= status < 300:
            with self.lock:
                hit.accepted = True
                self.accepted.setdefault(hit.message_id, hit)
        if reply == "slow":
            time.sleep(self.slow_seconds)
        try:
            handler.send_response(status)
            for name, value in extra.items():
                handler.send_header(name, value)
            handler.send_header("content-length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")
            handler.wfile.flush()
        except OSError:  # the sender gave up waiting
            handler.close_connection = True

    def requests(self) -> list[Hit]:
        with self.lock:
            return list(self.hits)

    def wait_for(self, accepted: int, what: str = "") -> dict[str, Hit]:
        """The deliveries taken, once there are ``accepted`` of them (fails after DEADLINE)."""
        wait_until(lambda: len(self.accepted) >= accepted, what or f"{accepted} deliveries")
        with self.lock:
            return dict(self.accepted)


def wait_until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE:g} s: {what}")
        time.sleep(0.05)


# -- a deliverer, an account, calls ----------------------------------------------------------


@contextmanager
def delivering(store: Store) -> Iterator[None]:
    """A deliverer running (``Deliverer.run``) in an event loop of its own thread."""

    async def in_thread(func: Callable[..., Any], *args: object) -> Any:
        return await anyio.to_thread.run_sync(func, *args)

    with anyio.from_thread.start_blocking_portal() as portal:
        deliverer = portal.call(lambda: Deliverer(store, store.settings, in_thread))
        running = portal.start_task_soon(deliverer.run)
        try:
            yield
        finally:
            running.cancel()
            with suppress(CancelledError):
                running.result(10)


@dataclass
class Shop:
    """An account with a campaign and its number; calls to it, and changes to them."""

    store: Store
    account: int = 0
    since: int = field(default_factory=lambda: int(time.time()) - 60)

    def __post_init__(self) -> None:
        self.account = self.store.create_account("shop").id
        self.store.add_campaign(self.account, 1, "Shop", "https://shop.example", "active")
        self.store.add_phone(self.account, NUMBER, 1, "", "static")

    def hook(self, url: str, events: Sequence[str] = EVENTS, method: str = "POST") -> IssuedHook:
        return self.store.add_hook(self.account, url, events, method)

    def call(self, talk: int = 30) -> str:
        """A live call, start to end (BEFORE_CALL_START and AFTER_CALL_FINISH); its id."""
        record = simulate_call(self.store, self.store.settings, self.account, NUMBER, CALLER, talk)
        return str(record["universalId"])

    def record(self, universal_id: str) -> dict[str, Any]:
        """The call as the v3 export shows it."""
        window = Window(self.since, int(time.time()) + 3600)
        for body in self.store.read_page([self.account], window, 0, 10_000) or []:
            record: dict[str, Any] = json.loads(b'{"page":0,' + body)
            if record["universalId"] == universal_id:
                return record
        raise AssertionError(f"no call {universal_id}")

    def statuses(self, universal_id: str) -> dict[str, int]:
        """The export's ``hooks`` of a call: event -> status (one endpoint)."""
        return {
            h["hookEventName"]: h["hookResponseStatus"] for h in self.record(universal_id)["hooks"]
        }

    def put(
        self, universal_id: str, announce: Literal["put"] | None = "put", **changes: Any
    ) -> ImportResult:
        """Write the call back changed as call/put does (``announce=None``: as
        `calltrack import` does)."""
        record = self.record(universal_id)
        del record["page"]
        record.update(changes)
        data = msgspec.json.encode([record])
        return import_bytes(self.store, self.account, data, self.store.settings.zone, announce)


def assert_complete_and_in_order(
    receiver: Receiver, secret: str, expected: Mapping[str, Sequence[str]]
) -> dict[str, Hit]:
    """Every request is signed by ``secret``; every delivery of ``expected`` (call id ->
    its events in order) was taken exactly once after deduplication by webhook-id, and
    nothing else; each of a call's deliveries came only after the one before it was taken;
    the retries of a delivery carry what its first attempt did. The deliveries taken."""
    hits = receiver.requests()
    for hit in hits:
        hit.verify(secret)
    with receiver.lock:
        accepted = dict(receiver.accepted)
    taken = sorted((hit.call_id, hit.event) for hit in accepted.values())
    assert taken == sorted((call, event) for call, events in expected.items() for event in events)
    by_id: dict[str, list[Hit]] = {}
    for hit in hits:
        by_id.setdefault(hit.message_id, []).append(hit)
    assert set(by_id) == set(accepted)  # no request of a delivery that was never taken
    for attempts in by_id.values():
        assert {(h.method, h.target, h.body) for h in attempts} == {
            (attempts[0].method, attempts[0].target, attempts[0].body)
        }
    for call, events in expected.items():
        done: list[str] = []
        for hit in (h for h in hits if h.call_id == call):
            before = list(events[: events.index(hit.event)])
            assert done[: len(before)] == before, f"{hit.event} of {call} sent before {before}"
            if hit.accepted and hit.event not in done:
                done.append(hit.event)
        assert done == list(events)
    return accepted


def cli(store: Store, *args: str, allow: str = "127.0.0.1") -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main,
        ["--database", store.settings.database_url, *args],
        env={"CALLTRACK_HOOKS_ALLOW_HOSTS": allow},
    )
    return result.exit_code, result.stdout, result.stderr


# -- the tests -------------------------------------------------------------------------------


def test_live_calls_and_their_updates_arrive_signed_once_in_order(
    make_store: StoreFactory,
) -> None:
    store = make_store(**HOOKS)
    shop = Shop(store)
    with Receiver() as receiver:
        issued = shop.hook(receiver.url)
        endpoint = issued.endpoint.id
        # Written while no deliverer runs: the export shows them, not answered yet.
        first, second = shop.call(), shop.call(talk=0)
        assert shop.statuses(first) == {"BEFORE_CALL_START": 0, "AFTER_CALL_FINISH": 0}
        assert store.hook_stats(endpoint).pending == 4
        # `calltrack import` sends nothing, a put of an unchanged call nothing, a put of a
        # new call nothing; a put that changes a call one CALL_UPDATED.
        assert shop.put(first, announce=None, duration=31).updated == 1
        assert shop.put(first).updated == 1
        new_call = dict(shop.record(second), universalId="put-new", duration=5)
        del new_call["page"]
        del new_call["hooks"]
        data = msgspec.json.encode([new_call])
        assert import_bytes(store, shop.account, data, store.settings.zone, "put").imported == 1
        assert store.hook_stats(endpoint).pending == 4
        shop.put(first, duration=77)
        shop.put(second, duration=1)
        assert store.hook_stats(endpoint).pending == 6

        with delivering(store):
            accepted = receiver.wait_for(6)
            wait_until(
                lambda: all(
                    shop.statuses(c) == {"BEFORE_CALL_START": 200, "AFTER_CALL_FINISH": 200}
                    for c in (first, second)
                ),
                "the export shows the answers",
            )
            wait_until(lambda: store.hook_stats(endpoint).pending == 0, "all recorded")
    expected = {first: EVENTS, second: EVENTS}
    assert assert_complete_and_in_order(receiver, issued.secret, expected) == accepted
    assert len(receiver.requests()) == 6  # a receiver that answers at once: one attempt each
    for hit in accepted.values():
        with pytest.raises(WebhookVerificationError):
            hit.verify(new_secret())  # a receiver with another secret rejects it
        assert hit.message_id.startswith("msg_")
        assert abs(int(hit.headers["webhook-timestamp"]) - hit.at) < 60
        assert hit.headers["user-agent"].startswith("calltrack-webhooks/")
        assert hit.headers["content-type"] == "application/json"
        assert hit.method == "POST"
        assert hit.target == "/hook"
    calls = {(h.call_id, h.event): h.content["call"] for h in accepted.values()}
    started = calls[(first, "BEFORE_CALL_START")]
    assert (started["clientNumber"], started["callerIdToClient"]) == (CALLER, NUMBER)
    assert (started["ctCampaignId"], started["ctCampaignName"]) == (1, "Shop")
    assert "page" not in started
    assert calls[(first, "AFTER_CALL_FINISH")]["duration"] == 30
    assert calls[(second, "AFTER_CALL_FINISH")]["status"] != "success"  # not answered
    assert calls[(first, "CALL_UPDATED")]["duration"] == 77
    assert calls[(second, "CALL_UPDATED")]["duration"] == 1
    stats = store.hook_stats(endpoint)
    assert (stats.pending, stats.failed, stats.delivered_day, stats.last_status) == (0, 0, 6, 200)
    assert stats.delay_p50_ms is not None
    assert stats.delay_p99_ms is not None
    logged = store.hook_log(endpoint)
    assert sorted(a.message_id for a in logged) == sorted(accepted)
    assert {(a.status, a.error) for a in logged} == {(200, "")}


@pytest.mark.parametrize(
    "failure",
    [500, "close", "slow", (429, {"retry-after": "1"})],
    ids=["500", "closed-without-answer", "slow-past-timeout", "429-retry-after"],
)
def test_a_receiver_failing_every_first_attempt_still_gets_everything_once_in_order(
    make_store: StoreFactory, failure: Reply
) -> None:
    settings = dict(HOOKS, hooks_timeout=0.5) if failure == "slow" else HOOKS
    store = make_store(**settings)
    shop = Shop(store)
    with Receiver(first_fails(failure), slow_seconds=1.2) as receiver:
        issued = shop.hook(receiver.url)
        calls = [shop.call(), shop.call()]
        for call in calls:
            shop.put(call, duration=99)
        with delivering(store):
            receiver.wait_for(6)
            wait_until(lambda: store.hook_stats(issued.endpoint.id).pending == 0, "all recorded")
    assert_complete_and_in_order(receiver, issued.secret, dict.fromkeys(calls, EVENTS))
    attempts: dict[str, list[Hit]] = {}
    for hit in receiver.requests():
        attempts.setdefault(hit.message_id, []).append(hit)
    assert len(attempts) == 6
    assert all(len(its) >= 2 for its in attempts.values())  # each failed once, then arrived
    if isinstance(failure, tuple):  # Retry-After: 1 beats the schedule's 0.1 s
        assert all(its[1].at - its[0].at >= 0.99 for its in attempts.values())
    logged = store.hook_log(issued.endpoint.id, limit=100)
    failed = [a for a in logged if a.status != 200]
    assert len({a.message_id for a in failed}) == 6
    expected_errors = {
        500: ("answered 500",),
        "close": ("connection failed",),
        "slow": ("no answer within 0.5 s", "timed out"),
    }.get(failure if not isinstance(failure, tuple) else 0, ("answered 429",))
    assert all(a.error.startswith(expected_errors) for a in failed), failed
    stats = store.hook_stats(issued.endpoint.id)
    assert (stats.pending, stats.failed, stats.delivered_day) == (0, 0, 6)
    assert store.hook(issued.endpoint.id).enabled


def test_a_receiver_down_for_a_while_gets_everything_when_it_is_up(
    make_store: StoreFactory,
) -> None:
    store = make_store(**HOOKS)
    shop = Shop(store)
    receiver = Receiver()  # its port is free: connections are refused
    issued = shop.hook(receiver.url)
    endpoint = issued.endpoint.id
    calls = [shop.call(), shop.call()]
    with delivering(store):
        wait_until(lambda: len(store.hook_log(endpoint)) >= 4, "attempts refused")
        shop.put(calls[0], duration=5)  # written while the receiver is down
        refused = store.hook_log(endpoint)
        assert all(a.status == 0 and a.error.startswith("cannot connect") for a in refused)
        with receiver:
            receiver.wait_for(5)
            wait_until(lambda: store.hook_stats(endpoint).pending == 0, "all recorded")
    assert_complete_and_in_order(receiver, issued.secret, {calls[0]: EVENTS, calls[1]: EVENTS[:2]})


def test_the_export_shows_the_latest_answer_of_each_delivery(make_store: StoreFactory) -> None:
    store = make_store(**HOOKS)
    shop = Shop(store)
    healthy = threading.Event()
    with Receiver(lambda hit, attempt: 200 if healthy.is_set() else 500) as receiver:
        issued = shop.hook(receiver.url, ["BEFORE_CALL_START", "AFTER_CALL_FINISH"])
        call = shop.call()
        assert shop.statuses(call) == {"BEFORE_CALL_START": 0, "AFTER_CALL_FINISH": 0}
        with delivering(store):
            # The start keeps failing; the finish waits behind it, not tried yet.
            wait_until(
                lambda: shop.statuses(call) == {"BEFORE_CALL_START": 500, "AFTER_CALL_FINISH": 0},
                "the export shows 500 for the start",
            )
            assert all(h.event == "BEFORE_CALL_START" for h in receiver.requests())
            healthy.set()
            wait_until(
                lambda: shop.statuses(call) == {"BEFORE_CALL_START": 200, "AFTER_CALL_FINISH": 200},
                "the export shows 200 for both",
            )
    [shown] = [h for h in shop.record(call)["hooks"] if h["hookEventName"] == "AFTER_CALL_FINISH"]
    assert shown == {
        "hookEventName": "AFTER_CALL_FINISH", "hookAddress": receiver.url, "hookMethod": "POST",
        "hookResponseStatus": 200,
    }  # fmt: skip
    assert_complete_and_in_order(receiver, issued.secret, {call: EVENTS[:2]})


def test_a_410_disables_the_endpoint_until_it_is_enabled_and_then_the_held_ones_go(
    make_store: StoreFactory,
) -> None:
    store = make_store(**HOOKS)
    shop = Shop(store)
    gone_once = threading.Event()

    def respond(hit: Hit, attempt: int) -> Reply:
        if gone_once.is_set():
            return 200
        gone_once.set()
        return 410

    with Receiver(respond) as receiver:
        issued = shop.hook(receiver.url)
        endpoint = issued.endpoint.id
        call = shop.call()
        with delivering(store):
            wait_until(lambda: not store.hook(endpoint).enabled, "the endpoint disabled")
            code, out, _ = cli(store, "hook", "list", "--json")
            assert code == 0
            [listed] = json.loads(out)["endpoints"]
            assert (listed["enabled"], listed["last_status"], listed["pending"]) == (
                False, 410, 2,
            )  # fmt: skip
            assert "410" in listed["disabled_reason"]
            code, out, _ = cli(store, "hook", "list")
            assert "DISABLED: the receiver answered 410 Gone" in out
            # A disabled endpoint gets no new deliveries; its held ones wait.
            later = shop.call()
            shop.put(call, duration=3)
            assert store.hook_stats(endpoint).pending == 2
            assert len(receiver.requests()) == 1
            code, out, _ = cli(store, "hook", "enable", str(endpoint))
            assert (code, out.strip()) == (0, f"webhook endpoint {endpoint} enabled")
            receiver.wait_for(2)
            wait_until(lambda: store.hook_stats(endpoint).pending == 0, "all recorded")
    assert_complete_and_in_order(receiver, issued.secret, {call: EVENTS[:2]})
    assert later not in {hit.call_id for hit in receiver.requests()}
    assert [h.event for h in receiver.requests()] == [
        "BEFORE_CALL_START", "BEFORE_CALL_START", "AFTER_CALL_FINISH",
    ]  # fmt: skip
    assert store.hook(endpoint).enabled


def test_a_delivery_fails_at_the_end_of_the_schedule(make_store: StoreFactory) -> None:
    store = make_store(**dict(HOOKS, hooks_schedule="0.1,0.1"))
    shop = Shop(store)
    with Receiver(always(500)) as receiver:
        issued = shop.hook(receiver.url, ["AFTER_CALL_FINISH"])
        endpoint = issued.endpoint.id
        call = shop.call()
        with delivering(store):
            wait_until(lambda: store.hook_stats(endpoint).failed == 1, "the delivery failed")
    hits = receiver.requests()
    assert [(h.call_id, h.event) for h in hits] == [(call, "AFTER_CALL_FINISH")] * 3
    assert len({h.message_id for h in hits}) == 1
    stats = store.hook_stats(endpoint)
    assert (stats.pending, stats.failed, stats.delivered_day, stats.last_status) == (0, 1, 0, 500)
    assert [a.status for a in store.hook_log(endpoint)] == [500, 500, 500]
    wait_until(lambda: shop.statuses(call) == {"AFTER_CALL_FINISH": 500}, "the export shows 500")


def test_an_endpoint_failing_for_too_long_is_disabled(make_store: StoreFactory) -> None:
    store = make_store(**dict(HOOKS, hooks_disable_after=0.5))
    shop = Shop(store)
    with Receiver(always(503)) as receiver:
        endpoint = shop.hook(receiver.url, ["AFTER_CALL_FINISH"]).endpoint.id
        shop.call()
        with delivering(store):
            wait_until(lambda: not store.hook(endpoint).enabled, "the endpoint disabled")
        assert len(receiver.requests()) >= 2
    code, out, _ = cli(store, "hook", "list")
    assert code == 0
    assert "DISABLED: every delivery failed for 0.5 s" in out
    assert store.hook_stats(endpoint).pending == 1  # held, not failed: `hook enable` sends it


def test_redirects_are_never_followed(make_store: StoreFactory) -> None:
    store = make_store(**dict(HOOKS, hooks_schedule="0.1"))
    shop = Shop(store)
    with Receiver() as elsewhere:
        with Receiver(always((302, {"location": elsewhere.url}))) as redirecting:
            endpoint = shop.hook(redirecting.url, ["AFTER_CALL_FINISH"]).endpoint.id
            shop.call()
            with delivering(store):
                wait_until(lambda: store.hook_stats(endpoint).failed == 1, "the delivery failed")
        assert elsewhere.requests() == []
    assert len(redirecting.requests()) == 2
    assert {(a.status, a.error) for a in store.hook_log(endpoint)} == {
        (302, "a redirect, not followed")
    }


def test_an_address_no_longer_allowed_is_refused_when_connecting(
    make_store: StoreFactory,
) -> None:
    allowed = make_store(**HOOKS)
    shop = Shop(allowed)
    with Receiver() as receiver:
        code, out, err = cli(allowed, "hook", "add", "shop", receiver.url, "--event",
                             "AFTER_CALL_FINISH", "--json")  # fmt: skip
        assert code == 0, err
        endpoint = int(json.loads(out)["id"])
        shop.call()
        # The operator takes 127.0.0.1 off the allow list: the deliverer refuses to connect.
        store = make_store(**dict(HOOKS, hooks_allow_hosts="", hooks_schedule="0.1"))
        with delivering(store):
            wait_until(lambda: store.hook_stats(endpoint).failed == 1, "the delivery failed")
        assert receiver.requests() == []
    assert {(a.status, a.error) for a in store.hook_log(endpoint)} == {
        (0, "cannot connect: 127.0.0.1 resolves only to private or reserved addresses; refused")
    }


def test_after_a_rotation_both_secrets_verify_until_the_overlap_ends(
    make_store: StoreFactory,
) -> None:
    store = make_store(**HOOKS)
    shop = Shop(store)
    with Receiver() as receiver:
        issued = shop.hook(receiver.url, ["AFTER_CALL_FINISH"])
        endpoint = issued.endpoint.id
        rotated = store.rotate_hook(endpoint)
        assert rotated != issued.secret
        assert store.hook(endpoint).rotating_until >= time.time() + 23 * 3600
        during = shop.call()
        with delivering(store):
            receiver.wait_for(1)
            # A second rotation whose overlap is over in a second.
            last = store.rotate_hook(endpoint, overlap=1)
            until = store.hook(endpoint).rotating_until
            wait_until(lambda: time.time() >= until + 0.01, "the overlap ended")
            after = shop.call()
            receiver.wait_for(2)
    hits = {h.call_id: h for h in receiver.requests()}
    assert len(hits) == 2
    signatures = hits[during].headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    hits[during].verify(issued.secret)
    hits[during].verify(rotated)
    with pytest.raises(WebhookVerificationError):
        hits[during].verify(last)
    assert len(hits[after].headers["webhook-signature"].split(" ")) == 1
    hits[after].verify(last)
    for old in (issued.secret, rotated):
        with pytest.raises(WebhookVerificationError):
            hits[after].verify(old)


def test_get_and_delete_endpoints_get_a_signed_query_and_no_body(
    make_store: StoreFactory,
) -> None:
    store = make_store(**HOOKS)
    shop = Shop(store)
    with Receiver() as receiver:
        get = shop.hook(receiver.url + "?token=a%20b", ["AFTER_CALL_FINISH"], "GET")
        delete = shop.hook(receiver.url + "/gone", ["AFTER_CALL_FINISH"], "DELETE")
        call = shop.call()
        with delivering(store):
            receiver.wait_for(2)
    hits = {h.method: h for h in receiver.requests()}
    assert set(hits) == {"GET", "DELETE"}
    for hit in hits.values():
        assert hit.body == b""
        assert "content-type" not in hit.headers
        assert hit.headers.get("content-length", "0") == "0"
    hits["GET"].verify(get.secret)
    hits["DELETE"].verify(delete.secret)
    with pytest.raises(WebhookVerificationError):
        hits["GET"].verify(delete.secret)
    path, _, query = hits["GET"].target.partition("?")
    assert path == "/hook"
    assert query.startswith("token=a%20b&event=AFTER_CALL_FINISH&universalId=")
    fields = dict(parse_qsl(query))
    assert (fields["token"], fields["universalId"], fields["clientNumber"]) == ("a b", call, CALLER)
    assert (fields["unique"], fields["tags"], fields["duration"]) == ("true", "[]", "30")
    assert hits["DELETE"].target.startswith("/hook/gone?event=AFTER_CALL_FINISH&")
    assert hits["DELETE"].content["call"]["universalId"] == call


def test_the_secret_is_never_logged(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = make_store(**dict(HOOKS, hooks_timeout=0.5))
    shop = Shop(store)
    replies: list[Reply] = [500, "close", (429, {"retry-after": "0"}), "slow", 410]

    def respond(hit: Hit, attempt: int) -> Reply:
        if hit.message_id.startswith("msg_test_") or attempt >= len(replies):
            return 200  # `hook test`, and the delivery once the endpoint is enabled again
        return replies[attempt]

    with Receiver(respond, slow_seconds=1.0) as receiver:
        issued = shop.hook(receiver.url, ["AFTER_CALL_FINISH"])
        refused = shop.hook(f"http://127.0.0.1:{free_port()}/down", ["AFTER_CALL_FINISH"])
        shop.call()
        with delivering(store):
            wait_until(lambda: not store.hook(issued.endpoint.id).enabled, "a 410")
            wait_until(lambda: len(store.hook_log(refused.endpoint.id)) >= 2, "refusals")
            store.enable_hook(issued.endpoint.id)
            wait_until(lambda: store.hook_stats(issued.endpoint.id).delivered_day == 1, "200")
        code, _, _ = cli(store, "hook", "test", str(issued.endpoint.id))
        assert code == 0
    assert len(receiver.requests()) == 7
    logged = caplog.text + "".join(str(r.args) + (r.exc_text or "") for r in caplog.records)
    assert "httpcore2" in {r.name.split(".")[0] for r in caplog.records}  # DEBUG was captured
    for secret in (issued.secret, refused.secret):
        assert secret.removeprefix("whsec_") not in logged
        assert secret.removeprefix("whsec_")[:16] not in logged


def test_the_app_sends_telephony_events_and_put_changes(make_client: Any) -> None:
    http, store = make_client(**HOOKS)
    account, key = new_account(store, "shop")
    store.add_campaign(account, 1, "Shop", "https://shop.example", "active")
    store.add_phone(account, NUMBER, 1, "", "static")
    bearer = {"authorization": f"Bearer {store.add_telephony_endpoint(account, 'generic').secret}"}
    start = int(time.time())

    def post(*events: dict[str, Any]) -> None:
        answer = http.post("/telephony/generic", json=list(events), headers=bearer)
        assert answer.status_code == 200, answer.text

    def calls() -> list[dict[str, Any]]:
        window = f"{time.strftime('%Y-%m-%d', time.gmtime(start - 86400))}/2100-01-01"
        found = http.get(f"/api/?json/v3/{key}/call/get/0/{window}").json()
        return [] if isinstance(found, dict) else list(found)  # a dict: no page 0, no calls

    def put(*records: dict[str, Any]) -> dict[str, Any]:
        body = msgspec.json.encode(list(records))
        answer = http.post(f"/api/?json/v3/{key}/call/put", content=body)
        assert answer.status_code == 200, answer.text
        inbound: dict[str, Any] = answer.json()["inbound"]
        return inbound

    with Receiver() as receiver:
        issued = store.add_hook(account, receiver.url, EVENTS)
        post({"event": "call.started", "call_id": "c1", "at": start, "caller": CALLER,
              "called": NUMBER})  # fmt: skip
        [started] = receiver.wait_for(1, "BEFORE_CALL_START while the call rings").values()
        assert started.event == "BEFORE_CALL_START"
        assert started.content["call"]["clientNumber"] == CALLER
        assert calls() == []  # the call has no record yet
        post(
            {"event": "call.answered", "call_id": "c1", "at": start + 3},
            {"event": "call.ended", "call_id": "c1", "at": start + 63, "talk_seconds": 60,
             "disposition": "answered"},
        )  # fmt: skip
        receiver.wait_for(2, "AFTER_CALL_FINISH")
        wait_until(
            lambda: [h["hookResponseStatus"] for h in calls()[0]["hooks"]] == [200, 200],
            "the export shows the answers",
        )
        [record] = calls()
        assert record["universalId"] == started.call_id
        del record["page"]
        assert put(record) == {"result": "ok", "imported": 0, "updated": 1}  # unchanged
        assert put(dict(record, universalId="new-by-put"))["imported"] == 1
        assert put(dict(record, duration=61))["updated"] == 1
        receiver.wait_for(3, "CALL_UPDATED")
        wait_until(lambda: store.hook_stats(issued.endpoint.id).pending == 0, "all recorded")
    # Nothing else was written to the outbox: the unchanged put and the new call sent nothing.
    stats = store.hook_stats(issued.endpoint.id)
    assert (stats.delivered_day, stats.failed, stats.pending) == (3, 0, 0)
    assert_complete_and_in_order(receiver, issued.secret, {started.call_id: EVENTS})
    assert len(receiver.requests()) == 3
    updated = [h for h in receiver.requests() if h.event == "CALL_UPDATED"]
    assert updated[0].content["call"]["duration"] == 61


@contextmanager
def importing(store: Store, account: int) -> Iterator[threading.Thread]:
    """An import holding the store's write lock (as a long `calltrack import` does) until
    the block ends."""
    started, release = threading.Event(), threading.Event()

    def calls() -> Iterator[tuple[int, StoredCall]]:
        started.set()
        release.wait(DEADLINE)
        yield from ()

    thread = threading.Thread(target=store.import_calls, args=(account, calls()), daemon=True)
    thread.start()
    assert started.wait(DEADLINE)
    try:
        yield thread
    finally:
        release.set()
        thread.join(DEADLINE)


def test_the_export_shows_an_answer_recorded_during_an_import_once_it_ends(
    make_store: StoreFactory,
) -> None:
    store = make_store(**dict(HOOKS, db_timeout=1.0))
    shop = Shop(store)
    with Receiver() as receiver:
        endpoint = shop.hook(receiver.url, ["AFTER_CALL_FINISH"]).endpoint.id
        call = shop.call()
        with delivering(store):
            with importing(store, shop.account):
                if store.row_locks:  # PostgreSQL sends and records beside the import...
                    receiver.wait_for(1)
                    wait_until(lambda: store.hook_stats(endpoint).delivered_day == 1, "recorded")
                    time.sleep(0.5)  # ...and its try to show them waits 0.1 s, then gives up
                assert shop.statuses(call) == {"AFTER_CALL_FINISH": 0}
            # No other delivery comes to bring the export up to date: it must happen anyway.
            wait_until(
                lambda: shop.statuses(call) == {"AFTER_CALL_FINISH": 200}, "the export shows 200"
            )


def test_a_put_of_the_exported_record_is_no_update_while_a_new_answer_is_not_shown(
    make_store: StoreFactory,
) -> None:
    store = make_store(**HOOKS)
    shop = Shop(store)
    endpoint = shop.hook("http://127.0.0.1:9/hook", ["AFTER_CALL_FINISH", "CALL_UPDATED"])
    call = shop.call()
    exported = shop.record(call)
    assert exported["hooks"][0]["hookResponseStatus"] == 0
    # The deliverer's two writes: the attempt, then (separately) the calls' `hooks`. A put
    # between them of the record as the client read it changes nothing.
    [claimed] = store.claim_deliveries(unix_ms(), 10_000, 10)
    done = AttemptResult(claimed.id, claimed.endpoint_id, unix_ms(), 200, 5, "", "delivered")
    store.record_attempts([done], 86_400_000)
    del exported["page"]
    data = msgspec.json.encode([exported])
    assert import_bytes(store, shop.account, data, store.settings.zone, "put").updated == 1
    assert store.hook_stats(endpoint.endpoint.id).pending == 0  # no CALL_UPDATED
    assert shop.statuses(call) == {"AFTER_CALL_FINISH": 200}
    store.show_delivery_statuses()
    assert shop.statuses(call) == {"AFTER_CALL_FINISH": 200}
    shop.put(call, duration=2)  # a real change still is one
    assert store.hook_stats(endpoint.endpoint.id).pending == 1
