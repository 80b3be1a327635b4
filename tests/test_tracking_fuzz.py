"""Bad input to the public tracking routes, fuzzed: ``POST /t/hit`` and ``GET /t/{key}.js``.

Requests go straight to the ASGI app (no HTTP client in between cleans them up: raw bytes of
a body, an Origin, a path), over a real store on SQLite and PostgreSQL with one tracked
campaign. A reference written from the contract says which answers a request may get:
200 for a well-formed hit of a page on the site, else the refusals 400 (not a hit), 403 (a
foreign origin or a page off the site), 404 (unknown site key), 405 (not POST), 413 (over
8 KB), never a 5xx. Every refusal is exactly ``{"error": "..."}`` and stores nothing (the
tracking tables are counted before and after); only the site's origins get CORS headers;
the snippet stays the same bytes whatever visitors send; hostile settings given through the
CLI stay inside a JSON string of the snippet (and ``node --check`` accepts it when node is
installed) and reach a CLI table only as printable text.

What it found (fixed with it): a referrer urlsplit cannot read, and a NUL in a page URL, an
analytics id, a site key (in the body or the snippet's path) or the User-Agent, were 500s on
PostgreSQL; a page URL with a backslash before ``@`` or a port out of range counted as on the
site; a wrong method got Starlette's plain-text 405; a campaign's name or site, a number's
office or an account's name reached CLI tables with their control characters raw.

More examples: ``CALLTRACK_HYPOTHESIS_EXAMPLES=2000 pytest tests/test_tracking_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from calltrack.cli.main import main
from calltrack.store import Store
from calltrack.store.tracking import TrackingCampaign
from calltrack.tracking.snippet import TOKEN
from tests.test_tracking_hits import SITE, tracked_campaign

EXAMPLES = int(os.environ.get("CALLTRACK_HYPOTHESIS_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MakeClient = Callable[..., tuple[TestClient, Store]]
TABLES = ("visitors", "sessions", "page_views", "holds", "hit_counts", "exhausted_hits")
MAX_HIT = 8 * 1024
ID_FIELDS = ("k", "v", "s", "ga", "ym", "rs")  # at most 64 characters
URL_FIELDS = ("u", "r")  # at most 2048
KEPT = ("u", "r", "ga", "ym", "rs")  # stored as text: no NUL
ANSWER_KEYS = {"v", "s", "n", "d", "hold"}
JSON_TYPE = "application/json"

HOSTILE = (
    "", " ", "</script><script>alert(1)</script>", "</SCRIPT>", "<img src=x onerror=alert(1)>",
    "<!--", "]]>", "\"'`", '"}', "\\", "\\u0000", "\x00", "a\x00b", "\x1b[2J\x1b[31mred",
    "\r\n", "\t", "\x7f\x9b", "\u2028\u2029", "\u202eevil", "\ufeff", "😀", "日本語", "é",
    "../../etc/passwd", "%00", "%2e%2e%2f", "' OR 1=1 --", "'; DROP TABLE sessions; --",
    "${7*7}", "{{7*7}}", "javascript:alert(1)", "null", "[]", "{}",
)  # fmt: skip
SUBDOMAIN = "https://m.shop.example"
ON_SITE_ORIGINS = (SITE, SUBDOMAIN, "http://shop.example", "https://www.shop.example")
FOREIGN_ORIGINS = (
    "https://evil.example", "https://shop.example.evil.example", "https://evilshop.example",
    "null", "", "https://[::1", "https://shop.example:99999", "ftp://shop.example",
    "https://evil.example\\@shop.example", "https://evil.example@shop.example.evil.example",
    "shop.example", "//shop.example", "https://shop.example\x00.evil.example",
)  # fmt: skip
OFF_SITE_PAGES = (
    "", "https://evil.example/", "https://shop.example.evil.example/", "javascript:alert(1)",
    "https://evil.example\\@shop.example/", "https://shop.example:99999/", "//shop.example/",
    "ftp://shop.example/", "https://[::1/", "data:text/html,<script>alert(1)</script>",
    "https://evil.example/?u=https://shop.example/",
)  # fmt: skip


# -- the app, raw --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def _call(
    app: Any, method: str, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> Reply:
    """One request through the ASGI app, as a server hands it over (the path percent-decoded)."""
    sent: list[dict[str, Any]] = []
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)] or [b""]

    async def receive() -> dict[str, Any]:
        if not chunks:
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # What Starlette reads of a scope; the client is a documentation address (TEST-NET-3).
    headers = [(b"host", b"testserver"), *headers]
    scope: dict[str, Any] = {"type": "http", "method": method, "scheme": "http"}
    scope["headers"] = headers
    scope |= {"path": unquote_to_bytes(path).decode("utf-8", "replace"), "raw_path": path}
    scope |= {"query_string": b"", "client": ("203.0.113.7", 50000), "server": ("t", 80)}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    names = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    return Reply(start["status"], names, answer)


@dataclass
class World:
    http: TestClient
    store: Store
    campaign: TrackingCampaign
    snippet: bytes = field(repr=False)
    visitors: set[str] = field(default_factory=set)  # ids the server issued
    sessions: set[str] = field(default_factory=set)

    def __repr__(self) -> str:  # printed with every failure: the key will do
        return f"World(site_key={self.campaign.site_key!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' printer
        printer.text(repr(self))

    def ask(
        self,
        method: str,
        path: bytes,
        body: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Reply:
        portal = self.http.portal
        assert portal is not None
        reply: Reply = portal.call(_call, self.http.app, method, path, headers or [], body)
        return reply

    def rows(self) -> dict[str, int]:
        """Rows of every tracking table, read apart from the app."""
        with self.store._connect() as conn:
            return {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES}


@pytest.fixture
def world(make_client: MakeClient) -> World:
    # A limit no fuzz run reaches, so the per-IP counter is written (and must roll back).
    http, store = make_client(hit_limit=1_000_000)
    campaign = tracked_campaign(store, dynamic=3)
    first = http.get(f"/t/{campaign.site_key}.js")
    assert first.status_code == 200
    return World(http, store, campaign, first.content)


# -- the reference -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HitRequest:
    method: str
    body: bytes
    origin: bytes | None
    origin_on_site: bool
    fields: dict[str, Any] | None  # the JSON object the body holds, when the fuzz built one
    page_on_site: bool
    headers: tuple[tuple[bytes, bytes], ...] = ()


def expected(world: World, request: HitRequest) -> set[int]:
    """The statuses the contract allows for ``request``."""
    if request.method == "OPTIONS":
        return {204}
    if request.method != "POST":
        return {405}
    if len(request.body) > MAX_HIT:
        return {413}
    fields = request.fields
    if fields is None:  # raw bytes: a hit only if they happen to be one
        try:
            fields = json.loads(request.body)
        except (ValueError, RecursionError):
            return {400}
        if not isinstance(fields, dict):
            return {400}
        # JSON that Python reads but a strict decoder may refuse (NaN, a BOM, UTF-16, a lone
        # surrogate): a 400, or the answer to the object Python read.
        page = fields.get("u")
        on_site = isinstance(page, str) and page.startswith(SITE + "/")
        return {400} | refusals(world, fields, request.origin, request.origin_on_site, on_site)
    return refusals(world, fields, request.origin, request.origin_on_site, request.page_on_site)


def refusals(
    world: World,
    fields: dict[str, Any],
    origin: bytes | None,
    origin_on_site: bool,
    page_on_site: bool,
) -> set[int]:
    """{200} for a good hit, else every refusal that applies (the server names one)."""
    strings = {name: fields.get(name) for name in (*ID_FIELDS, *URL_FIELDS)}
    if not isinstance(strings["k"], str) or not isinstance(strings["u"], str):
        return {400}
    if fields.get("t", "hit") not in ("hit", "ping"):
        return {400}
    if any(value is not None and not isinstance(value, str) for value in strings.values()):
        return {400}
    too_long = [n for n in ID_FIELDS if len(strings[n] or "") > 64]
    too_long += [n for n in URL_FIELDS if len(strings[n] or "") > 2048]
    if too_long or any("\x00" in (strings[n] or "") for n in KEPT):
        return {400}
    found = set()
    if strings["k"] != world.campaign.site_key:
        found.add(404)
    if (origin is not None and not origin_on_site) or not page_on_site:
        found.add(403)
    return found or {200}


# -- strategies --------------------------------------------------------------------------------

hostile = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=40),
    st.tuples(st.sampled_from(HOSTILE), st.integers(2, 300)).map(lambda p: p[0] * p[1]),
    st.lists(st.sampled_from(HOSTILE), min_size=2, max_size=6).map("".join),
)
wrong_type = st.sampled_from([5, -1, 1.5, True, False, [], {}, ["x"], {"a": 1}, 10**30])


def page_on_site(draw: st.DrawFn) -> str:
    base = draw(
        st.sampled_from((SITE, SUBDOMAIN, "http://shop.example", "https://www.shop.example"))
    )
    path = draw(hostile)
    if draw(st.booleans()):
        path = quote(path, safe="/")
    query = "?utm_source=" + quote(draw(hostile)) if draw(st.booleans()) else ""
    return f"{base}/{path.replace(chr(92), '/')}{query}"  # a backslash would leave the host


def near_bound(draw: st.DrawFn, bound: int, prefix: str = "") -> str:
    size = draw(st.sampled_from((bound - 1, bound, bound + 1, bound * 3)))
    return prefix + "a" * max(0, size - len(prefix))


@st.composite
def hit_requests(draw: st.DrawFn, world: World) -> HitRequest:
    method = "POST"
    if draw(st.integers(0, 99)) < 8:
        method = draw(st.sampled_from(("GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "X")))
    origin_on_site = draw(st.integers(0, 99)) < 50
    if origin_on_site:
        origin: str | None = draw(st.sampled_from(ON_SITE_ORIGINS))
    elif draw(st.booleans()):
        origin = None
    else:
        origin = draw(st.one_of(st.sampled_from(FOREIGN_ORIGINS), hostile))
    raw_origin = None if origin is None else origin.encode("utf-8", "surrogatepass")
    agents = st.sampled_from(("Mozilla/5.0", "a\x00b", "\x00", "\x1b[31m", "é" * 600))
    ua = draw(st.one_of(agents, hostile)).encode("utf-8", "surrogatepass")
    headers = ((b"user-agent", ua), (b"content-type", b"text/plain;charset=UTF-8"))
    if draw(st.integers(0, 99)) < 15:
        body = draw(raw_bodies(world))
        return HitRequest(method, body, raw_origin, origin_on_site, None, False, headers)
    fields, on_site = draw(hit_fields(world))
    body = json.dumps(fields, ensure_ascii=draw(st.booleans())).encode()
    if draw(st.integers(0, 99)) < 8:  # padded exactly to the limit, or past it
        fields["pad"] = ""
        room = MAX_HIT - len(json.dumps(fields).encode())
        fields["pad"] = "x" * max(0, room + draw(st.sampled_from((0, 1, 5000))))
        body = json.dumps(fields).encode()
    return HitRequest(method, body, raw_origin, origin_on_site, fields, on_site, headers)


@st.composite
def hit_fields(draw: st.DrawFn, world: World) -> tuple[dict[str, Any], bool]:
    """A good hit with up to four of its fields made bad; whether its page is on the site."""
    fields: dict[str, Any] = {"k": world.campaign.site_key, "u": page_on_site(draw)}
    fields["t"] = draw(st.sampled_from(("hit", "ping")))
    for name, known in (("v", world.visitors), ("s", world.sessions)):
        # Drawn alike whatever the world holds, so that a failure replays the same draws.
        reuse, index = draw(st.booleans()), draw(st.integers(0, 1000))
        if known and reuse:
            fields[name] = sorted(known)[index % len(known)]
    for name in ("r", "ga", "ym", "rs"):
        if draw(st.booleans()):
            fields[name] = draw(st.one_of(st.none(), hostile.map(lambda h: h[:64])))
    on_site = True  # whether the last page given is on the site (a missing one is a 400)
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(("k", "u", "t", "v", "s", "r", "ga", "ym", "rs", "extra")))
        choice = draw(st.integers(0, 5))
        if choice == 0:
            fields.pop(name, None)
        elif choice == 1:
            fields[name] = draw(wrong_type)
        elif choice == 2:
            fields[name] = None
        elif choice == 3 and name == "u":
            fields["u"] = draw(st.sampled_from(OFF_SITE_PAGES))
            on_site = False
        elif choice in (3, 4):
            bound = 2048 if name in URL_FIELDS else 64
            fields[name] = near_bound(draw, bound, SITE + "/" if name == "u" else "")
            on_site = on_site or name == "u"
        else:
            fields[name] = draw(hostile)
            on_site = on_site and name != "u"  # random text is no URL on the site
    return fields, on_site


@st.composite
def raw_bodies(draw: st.DrawFn, world: World) -> bytes:
    """Bodies that are no JSON object, or JSON only Python reads, or no JSON at all."""
    good = json.dumps({"k": world.campaign.site_key, "u": SITE + "/"}).encode()
    key = world.campaign.site_key.encode()
    return draw(
        st.one_of(
            st.binary(max_size=64),
            st.integers(0, len(good) - 1).map(lambda n: good[:n]),
            st.sampled_from(
                (
                    b"",
                    b"null",
                    b"[]",
                    b'"hit"',
                    good + b"x",
                    b"\xef\xbb\xbf" + good,
                    good.decode().encode("utf-16"),
                    b'{"k": NaN, "u": Infinity}',
                    b'{"k": "' + key + b'", "u": "https://shop.example/\\ud800"}',
                    b'{"k": "\\udfff", "u": "https://shop.example/"}',
                    b'{"k": "' + key + b'", "u": "https://shop.example/\xff\xfe"}',
                    b'{"k": "' + key + b'", "k": 5, "u": "https://shop.example/"}',
                    b"[" * 5000 + b"]" * 5000,
                    b'{"k": ' + b"[" * 3000,
                    b'{"k": "' + key + b'", "u": "https://shop.example/", "x": ' + b"{" * 2000,
                )
            ),
        )
    )


# -- tests -------------------------------------------------------------------------------------


def assert_error_body(reply: Reply, method: str) -> None:
    assert reply.headers.get("content-type", "").startswith(JSON_TYPE), reply.headers
    if method == "HEAD":
        assert reply.body == b""
        return
    decoded = json.loads(reply.body)
    assert isinstance(decoded, dict)
    assert list(decoded) == ["error"], decoded
    assert isinstance(decoded["error"], str)
    assert decoded["error"]


@FUZZ
@given(data=st.data())
def test_every_fuzzed_hit_gets_a_documented_answer_and_a_refused_one_stores_nothing(
    world: World, data: st.DataObject
) -> None:
    request = data.draw(hit_requests(world), label="request")
    allowed = expected(world, request)
    before = world.rows()
    headers = list(request.headers)
    if request.origin is not None:
        headers.append((b"origin", request.origin))
    reply = world.ask(request.method, b"/t/hit", request.body, headers)
    event(f"{request.method} {reply.status}")
    assert reply.status in allowed, (reply.status, reply.body[:300], allowed, request)
    after = world.rows()
    cors = reply.headers.get("access-control-allow-origin")
    if cors is not None:  # only ever the site's own origin, echoed
        assert request.origin is not None
        assert request.origin_on_site
        assert cors == request.origin.decode("latin-1")
    if reply.status == 204:
        assert after == before
        return
    if reply.status != 200:
        assert_error_body(reply, request.method)
        assert after == before, f"a refused hit ({reply.status}) stored rows"
    else:
        answer = json.loads(reply.body)
        assert set(answer) == ANSWER_KEYS
        assert answer["n"].isdigit()
        assert isinstance(answer["hold"], int)
        fields = request.fields or json.loads(request.body)  # raw: the object Python read
        sent_v, sent_s = fields.get("v"), fields.get("s")
        if sent_v in world.visitors:
            assert answer["v"] == sent_v
        else:  # an id the server did not issue is replaced by a new one
            assert answer["v"] not in world.visitors | world.sessions
        if sent_s not in world.sessions:
            assert answer["s"] not in world.sessions | world.visitors
        world.visitors.add(answer["v"])
        world.sessions.add(answer["s"])
        views = 1 if fields.get("t", "hit") == "hit" else 0
        assert after["page_views"] == before["page_views"] + views
        if request.origin is not None:
            assert cors == request.origin.decode("latin-1")
    # Nothing a visitor sends reaches the snippet: it is the same bytes after every hit.
    assert world.ask("GET", f"/t/{world.campaign.site_key}.js".encode()).body == world.snippet


NASTY_KEYS = (
    "../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%00", "a%00b", "\x00", "%2e%2e", "x" * 5000,
    "<script>alert(1)</script>", "</script>", "\u2028", "日本", "😀", "%ff%fe", "*", "'",
    "nosuchkeyatall000000",
)  # fmt: skip


@FUZZ
@given(data=st.data())
def test_every_fuzzed_snippet_path_gets_the_snippet_or_a_refusal(
    world: World, data: st.DataObject
) -> None:
    real = world.campaign.site_key
    key = data.draw(
        st.one_of(
            st.sampled_from(NASTY_KEYS),
            st.text(min_size=1, max_size=80),
            st.sampled_from(NASTY_KEYS).map(lambda k: real + k),
            st.sampled_from(NASTY_KEYS).map(lambda k: k + real),
            st.just(real.upper()),
            st.just(real),
        ),
        label="key",
    )
    method = data.draw(st.sampled_from(("GET", "GET", "HEAD", "POST", "PUT", "DELETE")))
    encode = data.draw(st.booleans())
    raw_key = quote(key, safe="") if encode else key
    path = ("/t/" + raw_key + ".js").encode("utf-8", "surrogatepass")
    reply = world.ask(method, path)
    ok = key == real and method in ("GET", "HEAD")
    event(f"{method} {reply.status}")
    assert reply.status in ({200} if ok else {404, 405}), (path[:200], reply.status, reply.body)
    if not ok and len(key) >= 3:  # a refusal never echoes the key it was asked for
        assert key.encode("utf-8", "surrogatepass") not in reply.body
    if ok and method == "GET":
        assert reply.body == world.snippet


# -- hostile settings through the CLI ------------------------------------------------------------


def cli(store: Store, *args: str, exit_code: int = 0) -> str:
    """The CLI's text output (stdout and stderr) over the test's database."""
    result = CliRunner().invoke(main, ["--database", store.settings.database_url, *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == exit_code, (args, result.output)
    return result.output


def config_of(snippet: bytes) -> dict[str, Any]:
    """The settings object in a rendered snippet: where the template's token was, as JSON."""
    template = (Path(__file__).parents[1] / "src/calltrack/tracking/snippet.js").read_text()
    before, after = template.split(TOKEN)
    text = snippet.decode()
    assert text.startswith(before)
    assert text.endswith(after)
    config: dict[str, Any] = json.loads(text[len(before) : len(text) - len(after)])
    return config


def assert_inert(snippet: bytes) -> None:
    """Nothing in the snippet can end a <script> element, open a comment or end a JS line."""
    text = snippet.decode().lower()
    for bad in ("</script", "<!--", "<script", "\u2028", "\u2029"):
        assert bad not in text


# What a shell can pass: no NUL in an argument.
argument = hostile.map(lambda h: h.replace("\x00", ""))


@FUZZ
@given(selector=argument.map(lambda h: h[:200]), name=argument)
def test_hostile_cli_settings_stay_data_in_the_snippet_and_printable_in_tables(
    world: World, selector: str, name: str
) -> None:
    store, account = world.store, str(world.campaign.account_id)
    site = f"--site={SITE}/{name[:40]}"
    cli(store, "campaign", "add", site, f"--selector={selector}", "--", account, "1", name)
    reply = world.ask("GET", f"/t/{world.campaign.site_key}.js".encode())
    assert reply.status == 200
    assert config_of(reply.body)["selector"] == selector  # inside a JSON string, as given
    assert_inert(reply.body)
    table = cli(store, "campaign", "list", account)
    assert all(c.isprintable() for line in table.splitlines() for c in line), table
    assert table.count("\n") == 1  # one campaign, one line: no line break from a value


def test_a_script_ending_selector_renders_a_snippet_node_accepts(
    world: World, tmp_path: Path
) -> None:
    store, account = world.store, str(world.campaign.account_id)
    selector = "</script><script>alert(1)</script>\u2028<!--"
    cli(store, "campaign", "add", account, "1", "Shop", "--selector", selector)
    body = world.ask("GET", f"/t/{world.campaign.site_key}.js".encode()).body
    assert config_of(body)["selector"] == selector
    assert_inert(body)
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the rendered snippet's syntax is not checked")
    script = tmp_path / "snippet.js"
    script.write_bytes(body)
    checked = subprocess.run([node, "--check", str(script)], capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr.decode()


def test_control_characters_never_reach_a_cli_table_raw(world: World) -> None:
    store, account = world.store, str(world.campaign.account_id)
    hostile_name = "Shop\x1b[2J\x1b[31m\rFAKE\u202e\x9b\u2028x"
    cli(store, "campaign", "add", account, "1", hostile_name, "--site", "https://a\x07.example")
    table = cli(store, "campaign", "list", account)
    assert "\x1b" not in table
    assert "\r" not in table
    assert "\x9b" not in table
    assert "\\x1b[2J\\x1b[31m\\rFAKE\\u202e\\x9b\\u2028x" in table  # shown, escaped
    assert "https://a\\x07.example" in table
    for control in ("ya\x1b[31m", "ya\u202e"):  # a rule refuses them, and says so printably
        refused = cli(
            store, "rule", "add", account, "1", "--utm-source", control, "--pool", exit_code=1
        )
        assert refused.startswith("error: --utm-source: ")
        assert refused.rstrip("\n").isprintable()
    cli(store, "rule", "add", account, "1", "--utm-source", "</script>'\"", "--pool")
    assert "utm_source='</script>\\'\"'" in cli(store, "rule", "list", account, "1")
    cli(store, "phone", "add", account, "74951112233", "--office", "Desk\x1b]0;owned\x07\n2")
    phones = cli(store, "phone", "list", account)
    assert "Desk\\x1b]0;owned\\x07\\n2" in phones
    assert phones.rstrip("\n").split("\n")[-1].isprintable()
    cli(store, "account", "add", "Evil\x1b[8m\nhidden")
    accounts = cli(store, "account", "list")
    assert "Evil\\x1b[8m\\nhidden" in accounts
    assert all(line.isprintable() for line in accounts.splitlines())
