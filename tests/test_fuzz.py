"""Bad input: raw query strings, fuzzed and hand-picked, get only the contract's answers.

Queries go straight to the ASGI app as raw bytes (no HTTP client in between cleans them up),
on SQLite and PostgreSQL, over a small known world. A reference of the contract (sections 2 to
4, written from API.md, not from src) says which answers a query may get: a page with exactly
these calls, or the error envelope with one documented message. Where the contract leaves a
choice open it allows each (a timestamp of more than 18 digits is a wrong date or a date far
away), and where it names something it does not define (the formats ``csv``/``xml``/``plain``,
the entities besides ``call``, write methods) only robustness is checked: no 5xx, no traceback.

Never a 500, never a traceback, never slow: a megabyte query string costs at most a few times
what a normal error costs. A long run: ``bench/fuzz_long.py``, or
``CALLTRACK_HYPOTHESIS_EXAMPLES=20000 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import quote, unquote_to_bytes
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from calltrack import access
from calltrack.importer import import_bytes
from calltrack.store import Store
from tests.faults._common import covers_spec_info

EXAMPLES = int(os.environ.get("CALLTRACK_HYPOTHESIS_EXAMPLES", "300"))
PAGE_SIZE = 3
ZONE = ZoneInfo("Europe/Moscow")  # the service's default zone, which the fixtures keep
MB = 1024 * 1024
SLOW = 1.0  # seconds: no answer in-process may take this long

NO_FORMAT = "Type to return is not available"
WRONG_VERSION = "It is wrong API version"
NOT_RECOGNIZED = "User is not recognized"
NO_ENTITY = "Entity does not exist"
NO_METHOD = "Method does not exist"
BAD_PAGE = "Incorrect page is set"
BAD_START = "Start date has wrong type. Possible format is 'Y-m-d' or timestamp"
BAD_END = "End date has wrong type. Possible format is 'Y-m-d' or timestamp"
NO_ROWS = "No rows found"
MESSAGES = frozenset(
    {NO_FORMAT, WRONG_VERSION, NOT_RECOGNIZED, NO_ENTITY, NO_METHOD, BAD_PAGE, BAD_START}
    | {BAD_END, NO_ROWS}
)
READ_METHODS = ("get", "getByRole", "getWithRole")
# Named by the contract but not defined by it: only robustness is checked for these.
OTHER_FORMATS = frozenset({"csv", "xml", "plain"})
OTHER_ENTITIES = frozenset({"callrole", "phone", "user", "campaign", "tag"})
OTHER_METHODS = frozenset({"put", "delete"})
CONTENT_TYPE = "application/json; charset=utf-8"

# Every call on its own second, some on the edges of May 2020 (the windows asked most).
ALPHA_TIMES = (
    "2020-04-30 23:59:59",
    "2020-05-01 00:00:00",
    "2020-05-01 10:00:00",
    "2020-05-02 10:00:00",
    "2020-05-15 12:00:00",
    "2020-05-31 23:59:59",
    "2020-06-01 00:00:00",
)
BETA_TIMES = (
    "2019-12-31 23:59:59",
    "2020-05-01 09:00:00",
    "2020-05-03 10:00:00",
    "2020-05-16 12:00:00",
    "2020-05-20 00:00:01",
)


# -- the world and the reference --------------------------------------------------------------


@dataclass
class World:
    """Accounts alpha (7 calls), beta (5 calls, shared with alpha by a role) and gamma (none)."""

    http: TestClient
    store: Store
    keys: dict[str, str] = field(default_factory=dict)  # name -> key
    scopes: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # key -> method -> ids
    instants: dict[str, int] = field(default_factory=dict)  # universalId -> instant
    info: dict[str, Any] | None = None  # the service's error `info`, the same in every error


def build_world(http: TestClient, store: Store) -> World:
    world = World(http, store)
    owned: dict[str, list[str]] = {}
    ids: dict[str, int] = {}
    for name, times in (("alpha", ALPHA_TIMES), ("beta", BETA_TIMES), ("gamma", ())):
        ids[name] = store.create_account(name).id
        world.keys[name] = access.issue_user_key(store, ids[name])
        owned[name] = [f"{name[0]}{n}" for n in range(len(times))]
        lines = []
        for uid, when in zip(owned[name], times, strict=True):
            world.instants[uid] = int(datetime.fromisoformat(when).replace(tzinfo=ZONE).timestamp())
            record = {"universalId": uid, "serviceType": "import", "status": "fail"}
            lines.append(msgspec.json.encode({**record, "callTime": when}))
        if lines:
            import_bytes(store, ids[name], b"\n".join(lines), store.settings.zone)
    shared = store.create_grant(store.create_role(ids["beta"], "r").id, ids["alpha"])
    world.keys["role"] = access.issue_role_key(store, shared)
    to_self = store.create_grant(store.create_role(ids["alpha"], "self").id, ids["alpha"])
    world.keys["self"] = access.issue_role_key(store, to_self)
    world.keys["revoked"] = access.issue_user_key(store, ids["alpha"])
    store.revoke_key(store.find_key(key_hash=access.hash_key(world.keys["revoked"])).id)
    # Section 3, for these keys: None is "not recognized" (wrong kind).
    for name in ("alpha", "beta", "gamma"):
        withrole = owned[name] + (owned["beta"] if name == "alpha" else [])
        world.scopes[world.keys[name]] = {"get": owned[name], "getWithRole": withrole}
    world.scopes[world.keys["role"]] = {"getByRole": owned["beta"]}
    world.scopes[world.keys["self"]] = {"getByRole": []}
    return world


LENIENT = "lenient"  # the contract does not define the answer: robustness only
Expected = set[tuple[str, ...] | str]  # acceptable answers: a page's ids, or an error message


def decode(part: bytes) -> str:
    """A segment as the contract reads it: percent-escapes decoded, UTF-8."""
    try:
        return unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        return "\x00not utf-8"  # equal to no valid value


def instant(text: str, *, end_of_day: bool) -> tuple[int | None, bool]:
    """(the instant, whether the contract leaves its validity open); None if neither format."""
    if text and text.isascii() and text.isdigit():
        # Digits only is a timestamp; past 18 digits no 64-bit column holds it, and the
        # contract does not say: a wrong date is as fine as the date itself.
        digits = text.lstrip("0") or "0"
        return (int(digits) if len(digits) <= 30 else 10**30), len(text) > 18
    if len(text) != 10 or not text.isascii() or text[4] != "-" or text[7] != "-":
        return None, False
    year, month, day = text[:4], text[5:7], text[8:]
    if not (year + month + day).isdigit():
        return None, False
    try:
        moment = date(int(year), int(month), int(day))
    except ValueError:
        return None, False  # 2020-02-30, 0000-01-01
    clock = (23, 59, 59) if end_of_day else (0, 0, 0)
    wall = datetime(moment.year, moment.month, moment.day, *clock, tzinfo=ZONE)
    return int(wall.timestamp()), False


def expect(world: World, raw: bytes) -> Expected:
    """Every answer the contract allows for the raw query string ``raw``."""
    parts = raw.split(b"/")
    if len(parts) > 1 and parts[-1] == b"":
        parts.pop()  # a trailing '/' is ignored
    seg = [decode(p) for p in parts[:8]] + [""] * (8 - min(8, len(parts)))
    fmt, version, key, entity, method, page_text, start_text, end_text = seg
    if fmt in OTHER_FORMATS:
        return {LENIENT}
    if fmt != "json":
        return {NO_FORMAT}
    if version != "v3":
        return {WRONG_VERSION}
    if key not in world.scopes:  # missing, malformed, unknown, revoked
        return {NOT_RECOGNIZED}
    if entity in OTHER_ENTITIES:
        return {LENIENT}
    if entity != "call":
        return {NO_ENTITY}
    if method in OTHER_METHODS:
        return {LENIENT}
    if method not in READ_METHODS:
        return {NO_METHOD}
    scope = world.scopes[key].get(method)
    if scope is None:  # a role key with get/getWithRole, a user key with getByRole
        return {NOT_RECOGNIZED}
    if not (page_text.isascii() and page_text.isdigit() and len(page_text) <= 9):
        return {BAD_PAGE}
    page = int(page_text)
    allowed: Expected = set()
    start, open_start = instant(start_text, end_of_day=False)
    if start is None or open_start:
        allowed.add(BAD_START)
    if start is None:
        return allowed
    end, open_end = instant(end_text, end_of_day=True) if end_text else (int(time.time()), False)
    if end is None or open_end:
        allowed.add(BAD_END)
    if end is None:
        return allowed
    calls = sorted((world.instants[uid], uid) for uid in scope)
    window = [uid for moment, uid in calls if start <= moment <= end]
    chunk = tuple(window[page * PAGE_SIZE : (page + 1) * PAGE_SIZE])
    allowed.add(chunk if chunk else NO_ROWS if page == 0 else BAD_PAGE)
    return allowed


# -- asking the app ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


async def _call_app(app: Any, method: str, raw: bytes, path: str) -> Reply:
    messages: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": raw,
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    began = time.perf_counter()
    await app(scope, receive, send)
    seconds = time.perf_counter() - began
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    return Reply(start["status"], headers, body, seconds)


def ask(world: World, raw: bytes, method: str = "GET", path: str = "/api/") -> Reply:
    """The app's answer to the raw query string, exactly as a server would pass it."""
    portal = world.http.portal
    assert portal is not None
    reply: Reply = portal.call(_call_app, world.http.app, method, raw, path)
    return reply


def answer_of(world: World, reply: Reply) -> tuple[str, ...] | str:
    """The reply as the reference speaks: a page's ids, or the error message."""
    assert reply.status == 200, (reply.status, reply.body[:300])
    assert reply.headers.get("content-type") == CONTENT_TYPE
    decoded = json.loads(reply.body)
    if isinstance(decoded, list):
        assert all(isinstance(c, dict) and "universalId" in c for c in decoded)
        assert len({c["page"] for c in decoded}) == 1
        return tuple(c["universalId"] for c in decoded)
    assert set(decoded) == {"inbound", "info", "payload"}
    assert decoded["payload"] == []
    message = decoded["inbound"]["error"]
    assert decoded["inbound"] == {"error": message}
    assert message in MESSAGES
    if world.info is None:  # the first error seen: it must cover the contract's `info`
        info = decoded["info"]
        assert covers_spec_info(info)
        world.info = info
    assert decoded["info"] == world.info  # the same in every error answer
    return str(message)


def check(world: World, raw: bytes) -> float:
    """Ask ``raw`` (GET, then HEAD) and hold the answer to the reference; the app's seconds."""
    allowed = expect(world, raw)
    reply = ask(world, raw)
    assert reply.seconds < SLOW, f"{reply.seconds:.2f} s for {raw[:200]!r}"
    assert b"Traceback" not in reply.body
    if LENIENT in allowed:
        assert reply.status < 500, (reply.status, reply.body[:300])
        return reply.seconds
    got = answer_of(world, reply)
    assert got in allowed, f"{raw[:300]!r}: got {got!r}, allowed {allowed!r}"
    head = ask(world, raw, "HEAD")
    assert (head.status, head.body) == (200, b"")
    assert head.headers.get("content-length") == str(len(reply.body))
    return max(reply.seconds, head.seconds)


# -- fixtures ----------------------------------------------------------------------------------

MakeClient = Callable[..., tuple[TestClient, Store]]


@pytest.fixture
def world(make_client: MakeClient) -> World:
    return build_world(*make_client(page_size=PAGE_SIZE))


# -- strategies ----------------------------------------------------------------------------------

NASTY = (
    "", "%", "%zz", "%ff%fe", "%00", "\x00", "json\x00", "\x01\x02\x1b[31m\x7f", "\r\n", "\t",
    " ", "' OR 1=1 --", "'; DROP TABLE calls; --", "\" OR \"\"=\"", '"}]', '{"a":[', "\\",
    "\\u0000", "null", "[]", "../../etc/passwd", "%2F", "%2e%2e", "é", "日本", "\ufeff", "😀",
    "-1", "+1", "1e9", "0x10", "1.5", " 1", "1 ", str(10**30), "99999999999999999999",
    "999999999999999999", "0000000001", "000000000", "9999-12-31", "0001-01-01", "0000-00-00",
    "2020-02-30", "2020-13-01", "2020-1-1", "20200501", "2020-05-01T00:00:00", "-62135596800",
    "2020-05-01 00:00:00", "%32%30%32%30-05-01", "Call", "GET", "getbyrole", "x" * 300,
    "%41" * 100, "?", "#", "&", "=", "*", "%25", "%%32%30", "٣", "２０２０-05-01",
    "csv", "xml", "plain", "user", "tag", "put", "delete",
)  # fmt: skip


def segment_values(pairs: list[tuple[str, str]]) -> list[list[str]]:
    """Valid values per position (so that most queries get far into the checks)."""
    return [
        ["json"],
        ["v3"],
        sorted({key for key, _ in pairs}),
        ["call"],
        list(READ_METHODS),
        ["0", "1", "2", "3", "000000001"],
        ["2020-05-01", "2020-01-01", "1588280400", "0", "2020-05-31"],
        ["", "2020-05-31", "2020-05-02", "1590969599", "2020-05-01", "9999-12-31"],
    ]


def text_bytes(text: str) -> bytes:
    return text.encode("utf-8")


any_segment = st.one_of(
    st.sampled_from(NASTY).map(text_bytes),
    st.text(max_size=24).map(text_bytes),
    st.text(max_size=12).map(lambda t: quote(t, safe="").encode()),
    st.from_regex(r"-?[0-9]{1,40}", fullmatch=True).map(text_bytes),
    st.dates().map(lambda d: d.isoformat().encode()),
    st.binary(max_size=32),
)


def chance(draw: st.DrawFn, percent: int) -> bool:
    """True about ``percent`` times in 100 (hypothesis leans to small integers: False)."""
    return draw(st.integers(0, 99)) >= 100 - percent


@st.composite
def queries(draw: st.DrawFn, pairs: list[tuple[str, str]]) -> bytes:
    """A valid query with up to three segments replaced, cut short or extended; or raw bytes.

    ``pairs`` are the (key, method) pairs that answer pages; most queries start from one.
    """
    if chance(draw, 10):
        return draw(st.binary(max_size=200))
    values = segment_values(pairs)
    segments = [draw(st.sampled_from(v)).encode() for v in values]
    if not chance(draw, 20):
        key, method = draw(st.sampled_from(pairs))
        segments[2], segments[4] = key.encode(), method.encode()
    for _ in range(draw(st.integers(1, 3)) if chance(draw, 50) else 0):
        segments[draw(st.integers(0, 7))] = draw(any_segment)
    if chance(draw, 20):  # percent-encode one valid segment whole
        position = draw(st.integers(0, 7))
        segments[position] = "".join(f"%{b:02X}" for b in segments[position]).encode()
    keep = draw(st.integers(0, 12)) if chance(draw, 20) else 8
    segments = (segments + [draw(any_segment) for _ in range(4)])[:keep]
    raw = b"/".join(segments)
    return raw + b"/" if chance(draw, 30) else raw


# -- tests -------------------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_raw_query_string_gets_an_answer_the_contract_allows(
    world: World, data: st.DataObject
) -> None:
    pairs = [(key, method) for key, scope in world.scopes.items() for method in scope]
    pairs.append((world.keys["revoked"], "get"))
    raw = data.draw(queries(pairs), label="query")
    allowed = expect(world, raw)
    event(" or ".join(sorted("a page" if isinstance(a, tuple) else a for a in allowed)))
    check(world, raw)


def test_the_reference_agrees_with_the_app_on_valid_pages(world: World) -> None:
    """The fuzz reference itself is right where the contract is exact (a guard for it)."""
    alpha, role = world.keys["alpha"], world.keys["role"]

    def may(page: int) -> bytes:
        return f"json/v3/{alpha}/call/get/{page}/2020-05-01/2020-05-31".encode()

    assert expect(world, may(0)) == {("a1", "a2", "a3")}
    assert expect(world, may(1)) == {("a4", "a5")}
    assert expect(world, may(2)) == {BAD_PAGE}
    with_role = f"json/v3/{alpha}/call/getWithRole/0/2020-05-01/2020-05-02"
    assert expect(world, with_role.encode()) == {("a1", "b1", "a2")}
    by_role = f"json/v3/{role}/call/getByRole/0/2020-01-01"
    assert expect(world, by_role.encode()) == {("b1", "b2", "b3")}
    for raw in (may(0), may(1), may(2), with_role.encode(), by_role.encode()):
        check(world, raw)


# The error of a bad value in each position, in order.
SEGMENT_ERRORS = [NO_FORMAT, WRONG_VERSION, NOT_RECOGNIZED, NO_ENTITY, NO_METHOD, BAD_PAGE]
SEGMENT_ERRORS += [BAD_START, BAD_END]


@pytest.mark.parametrize(
    "nasty",
    [
        "' OR 1=1 --",
        "'; DROP TABLE calls; --",
        '"}]',
        '{"inbound":{"error":"x"}}',
        "\\",
        "%27",
        "\x00",
        "%00",
        "%ff%fe",
        "%",
        "%zz",
        "\x01\x1b[2J",
    ],
    ids=repr,
)
def test_sql_and_json_metacharacters_in_any_segment_get_that_segments_error(
    world: World, nasty: str
) -> None:
    valid = f"json/v3/{world.keys['alpha']}/call/get/0/2020-05-01/2020-05-31".split("/")
    for position, message in enumerate(SEGMENT_ERRORS):
        for form in (nasty, quote(nasty, safe="")):
            segments = [*valid]
            segments[position] = form
            reply = ask(world, "/".join(segments).encode())
            assert answer_of(world, reply) == message, (position, form)
    assert world.store.count_calls() == len(ALPHA_TIMES) + len(BETA_TIMES)


def _alpha(world: World, tail: str) -> bytes:
    return f"json/v3/{world.keys['alpha']}/call/get/{tail}".encode()


HAND_PICKED: dict[str, tuple[Callable[[World], bytes], set[tuple[str, ...] | str]]] = {
    "1 MB in the last segment": (lambda w: _alpha(w, "0/2020-05-01/") + b"x" * MB, {BAD_END}),
    "1 MB of digits as to": (
        lambda w: _alpha(w, "0/2020-05-01/") + b"9" * MB,
        {BAD_END, ("a1", "a2", "a3")},
    ),
    "1 MB format": (lambda w: b"j" * MB, {NO_FORMAT}),
    "1 MB of slashes": (lambda w: b"/" * MB, {NO_FORMAT}),
    "1 MB of percent-escapes as from": (
        lambda w: _alpha(w, "0/") + b"%41" * (MB // 3),
        {BAD_START},
    ),
    "1 MB of bare percent signs as key": (lambda w: b"json/v3/" + b"%" * MB, {NOT_RECOGNIZED}),
    "NUL in the format": (lambda w: b"js\x00on/v3", {NO_FORMAT}),
    "NUL after the key": (
        lambda w: f"json/v3/{w.keys['alpha']}\x00/call/get/0/2020-05-01".encode(),
        {NOT_RECOGNIZED},
    ),
    "NUL in the page": (lambda w: _alpha(w, "0\x00/2020-05-01"), {BAD_PAGE}),
    "%00 in from": (lambda w: _alpha(w, "0/2020-05-01%00"), {BAD_START}),
    "%ff%fe as key": (lambda w: b"json/v3/%ff%fe/call/get/0/2020-05-01", {NOT_RECOGNIZED}),
    "% as page": (lambda w: _alpha(w, "%/2020-05-01"), {BAD_PAGE}),
    "%zz as from": (lambda w: _alpha(w, "0/%zz"), {BAD_START}),
    "%zz as to": (lambda w: _alpha(w, "0/2020-05-01/%zz"), {BAD_END}),
    "page 10**30": (lambda w: _alpha(w, f"{10**30}/2020-05-01"), {BAD_PAGE}),
    "page -1": (lambda w: _alpha(w, "-1/2020-05-01"), {BAD_PAGE}),
    "page 999999999": (lambda w: _alpha(w, "999999999/2020-05-01"), {BAD_PAGE}),
    "from 9999-12-31": (lambda w: _alpha(w, "0/9999-12-31"), {NO_ROWS}),
    "from 0001-01-01": (lambda w: _alpha(w, "0/0001-01-01"), {("a0", "a1", "a2")}),
    "to 0001-01-01": (lambda w: _alpha(w, "0/2020-01-01/0001-01-01"), {NO_ROWS}),
    "from 0001-01-01 to 9999-12-31": (
        lambda w: _alpha(w, "2/0001-01-01/9999-12-31"),
        {("a6",)},
    ),
    "from 99999999999999999999": (
        lambda w: _alpha(w, "0/99999999999999999999"),
        {BAD_START, NO_ROWS},
    ),
    "to 99999999999999999999": (
        lambda w: _alpha(w, "0/2020-05-01/99999999999999999999"),
        {BAD_END, ("a1", "a2", "a3")},
    ),
    "from 999999999999999999": (lambda w: _alpha(w, "0/999999999999999999"), {NO_ROWS}),
    "to 0": (lambda w: _alpha(w, "0/0/0"), {NO_ROWS}),
    "from 0000-01-01": (lambda w: _alpha(w, "0/0000-01-01"), {BAD_START}),
    "from 2020-02-30": (lambda w: _alpha(w, "0/2020-02-30"), {BAD_START}),
    "negative from": (lambda w: _alpha(w, "0/-1"), {BAD_START}),
    "empty query": (lambda w: b"", {NO_FORMAT}),
}


@pytest.mark.parametrize("case", list(HAND_PICKED))
def test_hand_picked_bad_input_gets_its_documented_answer(world: World, case: str) -> None:
    make, allowed = HAND_PICKED[case]
    raw = make(world)
    assert expect(world, raw) == allowed  # the reference agrees with the hand
    reply = ask(world, raw)
    assert reply.seconds < SLOW
    assert answer_of(world, reply) in allowed


def test_a_megabyte_query_string_costs_at_most_a_few_normal_errors(world: World) -> None:
    """A ratio of medians over many repetitions, so it holds on slow and fast machines."""
    alpha = world.keys["alpha"]
    normal = f"json/v3/{alpha}/call/get/0/2020-05-01/x".encode()
    huge = {
        "last segment": normal[:-1] + b"x" * MB,
        "first segment": b"x" * MB,
        "slashes": b"/" * MB,
        "escapes": f"json/v3/{alpha}/call/get/0/".encode() + b"%41" * (MB // 3),
        "bare percent signs": b"json/v3/" + b"%" * MB,
    }
    timings: dict[str, list[float]] = {name: [] for name in [*huge, "normal"]}
    for _ in range(25):
        timings["normal"].append(ask(world, normal).seconds)
        for name, raw in huge.items():
            timings[name].append(ask(world, raw).seconds)
    base = statistics.median(timings["normal"])
    ratios = {name: statistics.median(timings[name]) / base for name in huge}
    assert max(ratios.values()) <= 20, {k: round(v, 1) for k, v in ratios.items()}
