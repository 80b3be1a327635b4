"""The snippet's hit API under load: visitors posting page views and pings to ``POST /t/hit``.

A campaign is set up with the CLI (a site, a stub, a pool of dynamic numbers); then wrk keeps
``connections`` visitors busy at once. A visitor posts a page view without ids, then lives
``LIFE`` requests (pings and page views alternating, with the ids it was given) and leaves, and
a new visitor takes its place: the first visitors are lent the pool's numbers and keep them
while they ping, and once the pool is held every new one is shown the stub (exhausted).
The server runs with ``CALLTRACK_HIT_LIMIT=0``: every hit comes from 127.0.0.1.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import data
import load
import procs

from calltrack.config import Settings
from calltrack.store import open_store
from calltrack.store.core import unix_now

SITE = "https://shop.example"
PAGE = SITE + "/p?utm_source=x"
ACCOUNT = "shop"
STUB = "74950000000"
POOL_FIRST = 74951000000
LIFE = 6  # requests per visitor: a page view, then ping, view, ping, view, ping
# The long visits' runs: no visitor leaves within a run, and the pool has a number for each,
# so nearly every hit is of a visit keeping its number (a hold extended): a site whose pool
# is sized by the advice, between arrivals.
LONG_LIFE = 100_000
ENV = {"CALLTRACK_HIT_LIMIT": "0"}  # one address sends every hit


@dataclass(frozen=True, slots=True)
class Campaign:
    campaign_id: int
    site_key: str
    pool: int


def setup(url: str, pool: int) -> tuple[Campaign, Campaign]:
    """An account with two campaigns set up with the CLI: (warm-up, measured). The warm-up
    campaign (two numbers) warms the server, so the measured one's pool starts free: a hold
    lasts at least 60 s, longer than a run."""
    data.calltrack(url, "account", "add", ACCOUNT)
    return _campaign(url, 1, 2, POOL_FIRST), _campaign(url, 2, pool, POOL_FIRST + 100)


def setup_long_visits(url: str, pool: int) -> Campaign:
    """A third campaign for the long visits' runs, its ``pool`` numbers added through the
    store (the CLI starts Python once a number)."""
    data.calltrack(url, "campaign", "add", ACCOUNT, "3", "Shop", "--site", SITE, "--stub", STUB)
    store = open_store(Settings.from_env(env={}, database_url=url))
    try:
        account = store.find_account(ACCOUNT).id
        for index in range(pool):
            store.add_phone(account, str(POOL_FIRST + 1000 + index), 3, "office", "dynamic")
    finally:
        store.close()
    snippet = data.calltrack(url, "campaign", "snippet", ACCOUNT, "3")
    return Campaign(3, str(snippet["site_key"]), pool)


def _campaign(url: str, campaign_id: int, pool: int, first: int) -> Campaign:
    cid = str(campaign_id)
    data.calltrack(url, "campaign", "add", ACCOUNT, cid, "Shop", "--site", SITE, "--stub", STUB)

    def add(number: int) -> object:
        phone = ["phone", "add", ACCOUNT, str(number), "--campaign", cid, "--dynamic"]
        return data.calltrack(url, *phone)

    with ThreadPoolExecutor(4) as run:  # each command starts Python: four at a time
        list(run.map(add, range(first, first + pool)))
    snippet = data.calltrack(url, "campaign", "snippet", ACCOUNT, cid)
    return Campaign(campaign_id, str(snippet["site_key"]), pool)


def add_history(url: str, campaign: Campaign, days: int = 365, per_day: int = 400) -> int:
    """A year of earlier holds of the campaign's pool numbers (``per_day`` a day across the
    pool), as a store that has run a year holds: a hit that keeps its number must find the
    number's current hold among them. The number of holds added."""
    store = open_store(Settings.from_env(env={}, database_url=url))
    try:
        with store._connect() as conn:
            (account,) = conn.execute(
                "SELECT id FROM accounts WHERE name = ?", (ACCOUNT,)
            ).fetchone()
        first = unix_now() - days * 86400
        step = 86400 // per_day
        rows = [
            (account, str(POOL_FIRST + 100 + index % campaign.pool), f"old{index}",
             first + index * step, first + index * step + 600)
            for index in range(days * per_day)
        ]  # fmt: skip
        with store._transaction() as conn:
            conn.executemany(
                "INSERT INTO holds (account_id, number, session_id, held_from, held_until) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        with store._connect() as conn:  # as autovacuum would after such a load
            conn.execute("ANALYZE holds")
        return len(rows)
    finally:
        store.close()


def pool_state(url: str, campaign: Campaign) -> dict[str, object]:
    """``calltrack campaign pool``: size, held now, peak and stub hits of the last 24 hours."""
    return data.calltrack(url, "campaign", "pool", ACCOUNT, str(campaign.campaign_id))


_LUA = """
local key, page, origin = %(key)s, %(page)s, %(origin)s
local stub, life, out = %(stub)s, %(life)d, %(out)s
local threads = {}
%(pacing)s
wrk.headers["Content-Type"] = "text/plain"  -- what a browser's sendBeacon/fetch sends
wrk.headers["Origin"] = origin
function setup(thread) table.insert(threads, thread) end
function init(args)
  ready, first, last = {}, 1, 0   -- visitors waiting for their next request (a queue)
  left = {}                       -- visitor id -> requests it has left after the one in flight
  views, pings, arrivals, non200, lent, stubbed = 0, 0, 0, 0, 0, 0
  statuses, numbers = {}, {}
end
local function json(s) return '"' .. s .. '"' end
function request()
  if first <= last then  -- a visitor whose answer came back: its next request
    local visitor = ready[first]; ready[first] = nil; first = first + 1
    local kind = ((life - visitor.left) %% 2 == 1) and "ping" or "hit"
    if kind == "ping" then pings = pings + 1 else views = views + 1 end
    left[visitor.v] = visitor.left - 1
    return wrk.format("POST", "/t/hit", nil, '{"k":' .. json(key) .. ',"t":"' .. kind ..
      '","u":' .. json(page) .. ',"v":' .. json(visitor.v) .. ',"s":' .. json(visitor.s) .. '}')
  end
  arrivals = arrivals + 1; views = views + 1  -- a new visitor: a page view without ids
  local body = '{"k":' .. json(key) .. ',"t":"hit","u":' .. json(page) .. '}'
  return wrk.format("POST", "/t/hit", nil, body)
end
function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
    return  -- that visitor is gone; a new one takes the connection's next request
  end
  local v, s = body:match('"v":"([^"]*)"'), body:match('"s":"([^"]*)"')
  local n = body:match('"n":"([^"]*)"')
  if n == stub then stubbed = stubbed + 1 else lent = lent + 1; numbers[n] = true end
  local rest = left[v] or (life - 1)
  left[v] = nil
  if rest > 0 then last = last + 1; ready[last] = {v = v, s = s, left = rest} end
end
function done(summary, latency, requests)
  local t = {views = 0, pings = 0, arrivals = 0, non200 = 0, lent = 0, stubbed = 0}
  local statuses, numbers, distinct = {}, {}, 0
  for _, thread in ipairs(threads) do
    for name, _ in pairs(t) do t[name] = t[name] + thread:get(name) end
    for code, count in pairs(thread:get("statuses")) do
      statuses[code] = (statuses[code] or 0) + count
    end
    for n, _ in pairs(thread:get("numbers")) do
      if not numbers[n] then numbers[n] = true; distinct = distinct + 1 end
    end
  end
  local codes = {}
  for code, count in pairs(statuses) do table.insert(codes, json(code) .. ":" .. count) end
  local e = summary.errors
  local f = io.open(out, "w")
  f:write(string.format('{"requests":%%d,"duration_us":%%d,"bytes":%%d,"errors":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"views":%%d,"pings":%%d,' ..
    '"arrivals":%%d,"non200":%%d,"lent":%%d,"stubbed":%%d,"distinct_numbers":%%d,' ..
    '"statuses":{%%s}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    t.views, t.pings, t.arrivals, t.non200, t.lent, t.stubbed, distinct,
    table.concat(codes, ",")))
  f:close()
end
"""


# Offered load: wrk's delay() holds each request of a thread back to the thread's next slot,
# one every ``interval`` ms, so the visitors together offer a constant rate (as long as one of
# them is idle when a slot comes; if none is, the server is slower than the rate, and the
# request goes as soon as a visitor is free). wrk's latency counts from the request's send,
# so the wait for a slot is not in it. A thread that falls over a second behind its slots
# starts again from now instead of firing the backlog at once.
_PACING = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *ts);
]]
local clock, interval, slot = ffi.new("bench_timespec"), %(interval_ms)f, nil
local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end
function delay()
  local now = now_ms()
  if slot == nil or slot < now - 1000 then slot = now end
  slot = slot + interval
  return math.max(0, math.floor(slot - now))
end
"""


@dataclass(slots=True)
class HitsResult:
    connections: int
    offered_per_s: float | None  # the paced rate wrk offered; None for a closed loop
    life: int  # requests a visitor makes before it leaves
    server_cores: str  # the CPUs the server ran on ("all" unpinned)
    seconds: float
    requests: int
    hits_per_s: float  # answered 200, page views and pings alike
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    page_views: int
    pings: int
    new_visitors: int
    non200: int
    statuses: dict[str, int]  # non-200 answers by status
    socket_errors: int
    lent: int  # answers with a pool number
    stubbed: int  # answers with the stub: the pool was held
    distinct_numbers: int
    server_cpu_pct: float  # of one core, the server's workers
    client_cpu_pct: float  # wrk's
    other_cpu_pct: float  # the rest of the machine (PostgreSQL, other sessions)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def measure(
    port: int,
    campaign: Campaign,
    connections: int,
    seconds: float,
    *,
    cpus: str | None,
    server_pids: list[int],
    server_cores: str = "all",
    rate: float | None = None,
    life: int = LIFE,
) -> HitsResult:
    """``connections`` visitors at once against ``POST /t/hit`` for ``seconds``, with wrk:
    each sends its next request as soon as its answer is back (a closed loop: the server's
    capacity), or, with ``rate``, when the next slot of that many hits a second comes."""
    pacing = ""
    if rate is not None:
        interval = 1000 * load.wrk_threads(connections, cpus) / rate
        pacing = _PACING % {"interval_ms": interval}
    script = _LUA % {
        "pacing": pacing,
        "key": load.lua_string(campaign.site_key),
        "page": load.lua_string(PAGE),
        "origin": load.lua_string(SITE),
        "stub": load.lua_string(STUB),
        "life": life,
        "out": '"{out}"',
    }
    cpu0, busy0 = procs.cpu_seconds(server_pids), procs.machine_busy_seconds()
    raw, client_cpu = load.run_wrk(script, port, connections, seconds, cpus)
    server_cpu = procs.cpu_seconds(server_pids) - cpu0
    busy = procs.machine_busy_seconds() - busy0
    elapsed = raw["duration_us"] / 1e6
    good = raw["requests"] - raw["non200"]  # wrk counts answers; socket errors apart
    return HitsResult(
        connections=connections,
        offered_per_s=rate,
        life=life,
        server_cores=server_cores,
        seconds=elapsed,
        requests=raw["requests"],
        hits_per_s=good / elapsed,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        page_views=raw["views"],
        pings=raw["pings"],
        new_visitors=raw["arrivals"],
        non200=raw["non200"],
        statuses=dict(raw["statuses"]),
        socket_errors=raw["errors"],
        lent=raw["lent"],
        stubbed=raw["stubbed"],
        distinct_numbers=raw["distinct_numbers"],
        server_cpu_pct=100 * server_cpu / elapsed,
        client_cpu_pct=100 * client_cpu / elapsed,
        other_cpu_pct=max(0.0, 100 * (busy - server_cpu - client_cpu) / elapsed),
    )


def summary(result: dict[str, Any]) -> str:
    """One line for the bench's progress output."""
    offered = result["offered_per_s"]
    load_kind = "closed loop" if offered is None else f"{offered:,.0f}/s offered"
    if result.get("life", LIFE) != LIFE:
        load_kind += ", long visits"
    return (
        f"{load_kind}, server on CPU {result['server_cores']}: "
        f"{result['hits_per_s']:,.0f} hits/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, non-200: {result['non200']}"
    )
