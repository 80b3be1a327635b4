"""Webhooks' parts on their own: signatures against the standardwebhooks reference, the retry
schedule, Retry-After, the address checks, the payloads, and what an answer means."""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import json
import socket
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import anyio
import httpcore2
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from calltrack.config import ConfigError, Settings
from calltrack.hooks.deliverer import Answer, outcome
from calltrack.hooks.payload import render, request_parts
from calltrack.hooks.schedule import (
    LONGEST_RETRY_AFTER,
    RETRY_DELAYS,
    next_delay,
    parse_retry_after,
    parse_schedule,
)
from calltrack.hooks.signing import new_secret, secret_key, sign
from calltrack.hooks.targets import (
    AllowList,
    GuardedBackend,
    RefusedTarget,
    check_url,
    refused_address,
)

RECORD = (
    b'{"universalId":"u1","serviceType":"calltracking","clientNumber":"74991234567",'
    b'"duration":130,"unique":true,"target":false,"region":"\xd0\xb3. \xd0\x9c\xd0\xbe\xd1\x81'
    b'\xd0\xba\xd0\xb2\xd0\xb0","recordUrl":null,"tags":["a","b"],'
    b'"hooks":[{"hookEventName":"AFTER_CALL_FINISH","hookResponseStatus":200}]}'
)
PUBLIC = "93.184.216.34"  # a global address; numeric, so no DNS is needed


# -- signing --------------------------------------------------------------------------------


def test_a_secret_is_whsec_and_the_base64_of_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    for secret in (first, second):
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
        assert secret_key(secret) == base64.b64decode(secret[len("whsec_") :])


@pytest.mark.parametrize("payload", [b'{"event":"X","call":{}}', b"", "\u0439".encode() * 50])
def test_signatures_are_the_ones_standardwebhooks_makes_and_verifies(payload: bytes) -> None:
    secret, previous = new_secret(), new_secret()
    now = int(datetime.now(UTC).timestamp())
    header = sign([secret_key(secret)], "msg_abc", now, payload)
    expected = Webhook(secret).sign("msg_abc", datetime.fromtimestamp(now, UTC), payload)
    assert header == expected
    headers = {"webhook-id": "msg_abc", "webhook-timestamp": str(now), "webhook-signature": header}
    Webhook(secret).verify(payload, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(payload, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):  # another id: another signature
        Webhook(secret).verify(payload, {**headers, "webhook-id": "msg_abd"}, json_parse=False)
    # During a rotation: two signatures, space-separated; either secret verifies.
    both = sign([secret_key(secret), secret_key(previous)], "msg_abc", now, payload)
    assert both.split(" ") == [
        expected,
        Webhook(previous).sign("msg_abc", datetime.fromtimestamp(now, UTC), payload),
    ]
    for key in (secret, previous):
        Webhook(key).verify(payload, {**headers, "webhook-signature": both}, json_parse=False)


# -- the schedule ---------------------------------------------------------------------------


def test_the_standard_schedule_is_the_documented_table_three_days_long() -> None:
    minute, hour = 60, 3600
    assert (
        5, 5 * minute, 30 * minute, 2 * hour, 5 * hour, 10 * hour, 14 * hour, 20 * hour, 24 * hour,
    ) == RETRY_DELAYS  # fmt: skip
    assert 3 * 86400 <= sum(RETRY_DELAYS) < 4 * 86400
    assert parse_schedule("") == parse_schedule("  ") == RETRY_DELAYS
    assert parse_schedule("0.2,0.5,1") == (0.2, 0.5, 1.0)


@pytest.mark.parametrize("text", ["-1", "0.2,-0.5", "x", "1,,2"])
def test_a_bad_schedule_is_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - float()'s own message, or ours
        parse_schedule(text)
    with pytest.raises(ConfigError, match="CALLTRACK_HOOKS_SCHEDULE"):
        Settings.from_env(env={}, hooks_schedule=text)


@pytest.mark.parametrize(
    ("attempts", "retry_after", "expected"),
    [
        (0, None, None),  # nothing failed yet: not a retry
        (1, None, 5),
        (2, None, 300),
        (3, None, 1800),
        (4, None, 7200),
        (5, None, 18000),
        (6, None, 36000),
        (7, None, 50400),
        (8, None, 72000),
        (9, None, 86400),
        (10, None, None),  # the end of the schedule: the delivery has failed
        (10, 60, None),  # a Retry-After does not add tries
        (1, 60, 60),  # Retry-After longer than the schedule's wait: at least that long
        (2, 60, 300),  # shorter: the schedule's wait
        (1, 10 * 86400, LONGEST_RETRY_AFTER),  # capped at 24 h
    ],
)
def test_next_delay(attempts: int, retry_after: float | None, expected: float | None) -> None:
    assert next_delay(attempts, RETRY_DELAYS, retry_after) == expected


def test_next_delay_follows_a_shrunk_schedule_to_its_end() -> None:
    schedule = parse_schedule("0.1,0.2")
    assert [next_delay(n, schedule) for n in (1, 2, 3)] == [0.1, 0.2, None]


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 7 ", now) == 7
    assert parse_retry_after("0", now) == 0
    in_90s = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(in_90s, now) == pytest.approx(90)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now) == 0
    for nothing in (None, "", "soon", "-5", "1.5"):
        assert parse_retry_after(nothing, now) is None


# -- where deliveries may go ----------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "224.0.0.1", "192.0.2.1", "255.255.255.255", "::1", "::", "fd00::1",
        "fe80::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "ff02::1",
    ],
)  # fmt: skip
def test_private_and_reserved_addresses_are_refused(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_not_refused(address: str) -> None:
    assert not refused_address(ipaddress.ip_address(address))


def test_the_allow_list_takes_names_addresses_and_networks() -> None:
    allow = AllowList.parse(" Receiver.Example. , 127.0.0.1, 10.0.0.0/8, [::1], ,")
    assert allow.allows_host("receiver.example")
    assert allow.allows_host("RECEIVER.example.")
    assert allow.allows_host("127.0.0.1")
    assert allow.allows_host("10.200.0.9")
    assert allow.allows_host("[::1]")
    assert not allow.allows_host("127.0.0.2")
    assert not allow.allows_host("other.example")
    assert allow.allows_address(ipaddress.ip_address("10.0.0.1"))
    assert not allow.allows_address(ipaddress.ip_address("11.0.0.1"))
    assert AllowList.parse("") == AllowList()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://127.0.0.1/hook", "resolves to 127.0.0.1, a private or reserved address"),
        ("https://localhost:8443/hook", "localhost resolves to 127.0.0.1"),
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254, a private"),
        ("https://100.64.0.1/", "100.64.0.1, a private"),
        ("https://10.0.0.1/", "10.0.0.1, a private"),
        ("https://[::1]/", "::1, a private"),
        ("https://[fd00::1]/", "fd00::1, a private"),
        ("https://[::ffff:127.0.0.1]/", "a private or reserved address"),
        (f"http://{PUBLIC}/hook", "plain http is allowed only for hosts named in"),
        ("ftp://example.com/", "expected an http(s) URL with a host"),
        ("https:///path", "expected an http(s) URL with a host"),
        ("not a url", "expected an http(s) URL with a host"),
        (f"https://user:pw@{PUBLIC}/", "credentials in the URL"),
        (f"https://{PUBLIC}/#part", "fragment"),
        (f"https://{PUBLIC}:99999/", "not a URL"),
        ("https://name.invalid/", "cannot resolve name.invalid"),
    ],
)
def test_check_url_refuses_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(RefusedTarget, match=problem.replace("(", r"\(").replace(")", r"\)")):
        check_url(url, AllowList())


def test_check_url_lets_public_https_and_allowed_hosts_through() -> None:
    assert check_url(f"https://{PUBLIC}/hook?x=1", AllowList()) == f"https://{PUBLIC}/hook?x=1"
    assert check_url("https://[2606:4700:4700::1111]/", AllowList())
    local = AllowList.parse("127.0.0.1,localhost,10.0.0.0/8")
    assert check_url("http://127.0.0.1:8000/hook", local)
    assert check_url("http://localhost:8000/hook", local)
    assert check_url("http://10.1.2.3/hook", local)
    assert check_url("https://localhost/hook", AllowList.parse("127.0.0.0/8"))
    # An allowed address does not allow the rest of its kind.
    with pytest.raises(RefusedTarget):
        check_url("https://127.0.0.2/", local)
    with pytest.raises(RefusedTarget):
        check_url("https://[::1]/", local)


def test_the_guarded_backend_connects_only_to_allowed_addresses() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])

        async def connect(allow: str, host: str) -> str:
            backend = GuardedBackend(AllowList.parse(allow))
            try:
                stream = await backend.connect_tcp(host, port, timeout=5)
            except httpcore2.ConnectError as exc:
                return f"refused: {exc}"
            await stream.aclose()
            return "connected"

        assert anyio.run(connect, "", "127.0.0.1").startswith("refused: 127.0.0.1 resolves only")
        assert anyio.run(connect, "", "localhost").startswith("refused: localhost resolves only")
        assert anyio.run(connect, "10.0.0.0/8", "127.0.0.1").startswith("refused")
        assert anyio.run(connect, "127.0.0.1", "127.0.0.1") == "connected"
        assert anyio.run(connect, "localhost", "localhost") == "connected"
        assert anyio.run(connect, "127.0.0.0/8", "localhost") == "connected"

        async def unix() -> None:
            await GuardedBackend(AllowList.parse("127.0.0.1")).connect_unix_socket("/tmp/x")

        with pytest.raises(httpcore2.ConnectError, match="unix socket"):
            anyio.run(unix)


# -- payloads -------------------------------------------------------------------------------


def test_a_post_or_put_carries_the_event_and_the_record_as_json() -> None:
    for method in ("POST", "PUT"):
        payload = render("AFTER_CALL_FINISH", RECORD, method)
        assert payload == b'{"event":"AFTER_CALL_FINISH","call":' + RECORD + b"}"
        decoded = json.loads(payload)
        assert decoded["call"]["region"] == "г. Москва"
        assert request_parts("https://r.example/h?k=1", method, payload) == (
            "https://r.example/h?k=1",
            payload,
            payload,
        )


def test_a_get_or_delete_carries_the_event_and_fields_in_the_query() -> None:
    for method in ("GET", "DELETE"):
        payload = render("BEFORE_CALL_START", RECORD, method)
        fields = parse_qsl(payload.decode(), keep_blank_values=True)
        assert fields == [
            ("event", "BEFORE_CALL_START"),
            ("universalId", "u1"),
            ("serviceType", "calltracking"),
            ("clientNumber", "74991234567"),
            ("duration", "130"),
            ("unique", "true"),
            ("target", "false"),
            ("region", "г. Москва"),
            # recordUrl is null: left out
            ("tags", '["a","b"]'),
            ("hooks", '[{"hookEventName":"AFTER_CALL_FINISH","hookResponseStatus":200}]'),
        ]
        url, body, signed = request_parts("https://r.example/h?token=a%20b", method, payload)
        assert body == b""
        assert signed == b"token=a%20b&" + payload
        assert url == "https://r.example/h?" + signed.decode()
        url, body, signed = request_parts("https://r.example/h", method, payload)
        assert (url, body, signed) == ("https://r.example/h?" + payload.decode(), b"", payload)


# -- what an answer means -------------------------------------------------------------------

NOW_MS = 1_800_000_000_000


def answer(status: int, retry_after: float | None = None, error: str = "") -> Answer:
    return Answer(status, 12, error, retry_after, b"")


@pytest.mark.parametrize(
    ("got", "attempts_before", "expected"),
    [
        (answer(200), 0, ("delivered", 0)),
        (answer(204), 5, ("delivered", 0)),
        (answer(299), 0, ("delivered", 0)),
        (answer(410), 0, ("gone", 0)),
        (answer(500), 0, ("retry", NOW_MS + 100)),
        (answer(500), 1, ("retry", NOW_MS + 200)),
        (answer(500), 2, ("failed", 0)),  # the schedule is over
        (answer(0, error="cannot connect"), 0, ("retry", NOW_MS + 100)),
        (answer(302), 0, ("retry", NOW_MS + 100)),  # a redirect is a failure
        (answer(404), 0, ("retry", NOW_MS + 100)),
        (answer(429, 3), 0, ("retry", NOW_MS + 3000)),  # Retry-After: at least that long
        (answer(503, 3), 1, ("retry", NOW_MS + 3000)),
        (answer(429, 0.05), 1, ("retry", NOW_MS + 200)),  # shorter: the schedule's
        (answer(500, 3), 0, ("retry", NOW_MS + 100)),  # Retry-After only for 429 and 503
        (answer(429, 3), 2, ("failed", 0)),
    ],
)
def test_outcome(got: Answer, attempts_before: int, expected: tuple[str, int]) -> None:
    assert outcome(got, attempts_before, (0.1, 0.2), NOW_MS) == expected


def test_a_batch_of_attempts_tells_each_endpoint_its_failing_since() -> None:
    from calltrack.store.hooks import AttemptResult, _endpoint_changes

    def attempt(endpoint: int, at: int, outcome: str) -> AttemptResult:
        return AttemptResult(1, endpoint, at, 0, 1, "", outcome)  # type: ignore[arg-type]

    changes = _endpoint_changes(
        [
            attempt(1, 30, "retry"),  # after a success: failing since 30
            attempt(1, 10, "delivered"),
            attempt(1, 5, "failed"),  # before the success: forgotten
            attempt(1, 40, "retry"),
            attempt(2, 5, "retry"),  # only failures: failing since 5 unless earlier
            attempt(2, 7, "retry"),
            attempt(3, 9, "retry"),  # a success last: not failing
            attempt(3, 11, "delivered"),
            attempt(4, 3, "gone"),  # 410: disabled, failing_since untouched
        ]
    )
    one, two, three, four = changes[1], changes[2], changes[3], changes[4]
    assert (one.succeeded, one.failing_since, one.last_failure) == (True, 30, 40)
    assert (two.succeeded, two.failing_since, two.last_failure) == (False, 5, 7)
    assert (three.succeeded, three.failing_since) == (True, None)
    assert (four.succeeded, four.failing_since, four.gone_at) == (False, None, 3)
