"""The public tracking routes: the page snippet ``GET /t/{site_key}.js`` and ``POST /t/hit``.

No API key: a site key only opens its campaign's snippet and hits. Browsers post hits as
``text/plain`` (no preflight); only the campaign's site and its subdomains get CORS headers,
and a hit from any other origin or for a page off the site is refused and stores nothing.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from ipaddress import ip_address
from zoneinfo import ZoneInfo

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from calltrack.api.app import read_body, reply, service_of
from calltrack.api.batches import GroupCommit
from calltrack.config import Settings
from calltrack.demo_site import demo_page
from calltrack.errors import StoreUnavailable
from calltrack.store import Store
from calltrack.store.tracking import TrackingCampaign
from calltrack.tracking.hits import (
    MAX_HIT_BYTES,
    HitAnswer,
    HitBody,
    HitRejected,
    HitToRecord,
    Visit,
    issued,
    on_site,
    parse_hit,
    record_hits,
    site_host,
)
from calltrack.tracking.snippet import SnippetConfig, render_snippet, snippet_etag

JSON = "application/json"
SNIPPET_MAX_AGE = 300
# Hits a transaction records at most (see ``GroupCommit``).
HIT_BATCH_LIMIT = 64


async def snippet(request: Request) -> Response:
    """The snippet with its campaign's settings, cacheable for five minutes."""
    key = str(request.path_params["site_key"])
    campaign = await _campaign(request, key)
    if campaign is None:
        return reply(request, b"/* unknown site key */\n", 404, media_type="text/javascript")
    hit_url = public_url(request, str(request.url_for("hit")))
    body = render_snippet(
        SnippetConfig(
            k=campaign.site_key,
            hit=hit_url,
            replace=campaign.replace_numbers,
            selector=campaign.selector,
            format=campaign.display_format,
        )
    )
    etag = snippet_etag(body)
    headers = {"cache-control": f"public, max-age={SNIPPET_MAX_AGE}", "etag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(b"", 304, headers=headers)
    return reply(request, body, headers=headers, media_type="text/javascript")


class HitEndpoint:
    """``/t/hit`` as an ASGI app: a route of a plain function answers the methods it does not
    list itself, in plain text; this one gets every method and answers a wrong one in JSON."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await hit(Request(scope, receive))
        await response(scope, receive, send)


async def hit(request: Request) -> Response:
    """``/t/hit`` with any method: a hit, a preflight, or 405 as ``{"error": ...}``."""
    if request.method == "POST":
        return await post_hit(request)
    if request.method == "OPTIONS":
        return await hit_options(request)
    return _json(request, {"error": "a hit is posted (POST)"}, 405, {"allow": "POST, OPTIONS"})


async def post_hit(request: Request) -> Response:
    """Record a page view or ping; answer the number to show, or ``{"error": ...}``."""
    service = service_of(request)
    settings = service.settings
    origin = request.headers.get("origin")
    try:
        body = await read_body(request, MAX_HIT_BYTES)
        if body is None:
            raise HitRejected(413, f"a hit is at most {MAX_HIT_BYTES} bytes")
        parsed = parse_hit(body)
        visit = Visit(
            client_ip(request, settings),
            # PostgreSQL keeps no NUL in text (a 500 before); servers that pass one on exist.
            request.headers.get("user-agent", "").replace("\x00", ""),
            int(time.time()),
            settings.hit_limit,
        )
        # One trip to a worker thread for the whole hit, the campaign's reads and then its
        # transaction, shared with the hits that queued meanwhile (a group commit: each
        # trip, pool checkout and commit costs more than a hit's queries).
        answer = await service.hits.submit((parsed, origin, visit))
    except _PastOrigin as past:
        exc, allowed = past.reason, _cors(origin) if origin is not None else {}
        if isinstance(exc, StoreUnavailable):
            headers = {**allowed, "retry-after": str(settings.retry_after)}
            return _json(request, {"error": "service temporarily unavailable"}, 503, headers)
        return _json(request, {"error": exc.message}, exc.status, allowed)
    except HitRejected as exc:
        return _json(request, {"error": exc.message}, exc.status, {})
    except StoreUnavailable:
        headers = {"retry-after": str(settings.retry_after)}
        return _json(request, {"error": "service temporarily unavailable"}, 503, headers)
    allowed = _cors(origin) if origin is not None else {}
    return reply(request, answer.encode(), 200, {**allowed, "cache-control": "no-store"}, JSON)


class _PastOrigin(Exception):
    """A hit refused, or a store that failed, after the origin was found on the campaign's
    site: the answer carries the origin's CORS headers, so the page can read the error."""

    def __init__(self, reason: HitRejected | StoreUnavailable) -> None:
        super().__init__(str(reason))
        self.reason = reason


# A hit as its group commit takes it: what the snippet posted, its Origin, who and when.
PostedHit = tuple[HitBody, str | None, Visit]


def hit_intake(
    store: Store, zone: ZoneInfo, threads: Executor
) -> GroupCommit[PostedHit, HitAnswer]:
    """The group commit a worker's hits go through."""
    return GroupCommit(lambda hits: answer_hits(store, hits, zone), threads, HIT_BATCH_LIMIT)


def answer_hits(store: Store, hits: list[PostedHit], zone: ZoneInfo) -> list[HitAnswer | Exception]:
    """Hits, in a worker thread: each one's campaign by site key and its origin checked,
    then all recorded in one transaction. For each, its answer or what refused it."""
    answers: dict[int, HitAnswer | Exception] = {}
    recorded: list[int] = []
    batch: list[HitToRecord] = []
    down: StoreUnavailable | None = None  # the store, once a campaign could not be read
    for place, (hit, origin, visit) in enumerate(hits):
        try:
            if down is not None:  # not asked again for each hit, each waiting the timeout
                raise down
            found = store.hit_campaign(hit.k) if issued(hit.k) else None  # a NUL was a 500
            if found is None:
                raise HitRejected(404, "unknown site key")
            if origin is not None and not on_site(origin, site_host(found.campaign)):
                raise HitRejected(403, "this origin may not post hits for the campaign")
        except StoreUnavailable as exc:
            answers[place] = down = exc
            continue
        except HitRejected as exc:
            answers[place] = exc
            continue
        recorded.append(place)
        batch.append((found, hit, visit))
    for place, outcome in zip(recorded, record_hits(store, batch, zone), strict=True):
        # Past the origin check: the answer carries its CORS headers.
        if isinstance(outcome, (HitRejected, StoreUnavailable)):
            answers[place] = _PastOrigin(outcome)
        else:
            answers[place] = outcome
    return [answers[place] for place in range(len(hits))]


async def hit_options(request: Request) -> Response:
    """A preflight (a snippet never needs one; some proxies and old browsers send it)."""
    origin = request.headers.get("origin", "")
    headers = {"access-control-allow-methods": "POST", "access-control-max-age": "86400"}
    headers["access-control-allow-headers"] = "content-type"
    return Response(b"", 204, headers={**headers, **({"vary": "Origin"} if origin else {})})


async def _campaign(request: Request, site_key: str) -> TrackingCampaign | None:
    if issued(site_key) is None:  # no key the server issues (a NUL in one was a 500)
        return None
    service = service_of(request)
    return await service.read(service.store.tracking_campaign, site_key)


def _cors(origin: str) -> dict[str, str]:
    return {"access-control-allow-origin": origin, "vary": "Origin"}


def _json(
    request: Request, payload: dict[str, str], status: int, headers: dict[str, str]
) -> Response:
    return reply(request, msgspec.json.encode(payload), status, headers, JSON)


def from_trusted_proxy(request: Request, settings: Settings) -> bool:
    if not settings.trusted_proxies.strip():  # the common case: no parsing on every hit
        return False
    peer = request.client.host if request.client else ""
    try:
        address = ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in settings.proxy_networks)


def via_https(request: Request) -> bool:
    """Whether the browser reached us over https: directly, or through a trusted proxy that
    says so (the proxy ends TLS and talks to us over http)."""
    if request.url.scheme == "https":
        return True
    return request.headers.get("x-forwarded-proto") == "https" and from_trusted_proxy(
        request, service_of(request).settings
    )


def public_url(request: Request, url: str) -> str:
    """A URL of this server as browsers reach it (https when it was reached over https)."""
    if via_https(request) and url.startswith("http:"):
        return "https:" + url.split(":", 1)[1]
    return url


def client_ip(request: Request, settings: Settings) -> str:
    """The peer's address, or the first X-Forwarded-For hop when the peer is a trusted proxy."""
    peer = request.client.host if request.client else ""
    if from_trusted_proxy(request, settings):
        first = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
        try:
            return str(ip_address(first))
        except ValueError:
            pass  # a proxy that sent no usable address: the peer it is
    return peer


async def demo_site(request: Request) -> Response:
    """The demo site's pages, with the snippet of the demo campaign (``calltrack demo``)."""
    key = service_of(request).settings.demo_site
    page = demo_page(str(request.path_params.get("page", "")), key) if key else None
    if page is None:
        return reply(request, b"not found\n", 404, media_type="text/plain")
    return reply(request, page, media_type="text/html; charset=utf-8")
