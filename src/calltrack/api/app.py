"""The ASGI application: routes, the one place errors become answers, and the access log.

Each route is a Starlette handler (request -> response); what they share (settings, store,
the pool's limit) is a ``Service`` in ``app.state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from calltrack.api.answers import Answer
from calltrack.api.batches import GroupCommit
from calltrack.api.encoding import accepts_gzip, gzip_answer
from calltrack.api.handler import READ_HTTP_METHODS, allowed_http_methods, handle
from calltrack.api.home import CONTENT_TYPE as HOME_CONTENT_TYPE
from calltrack.api.home import home_page
from calltrack.api.request import V3Request, parse, redact_query
from calltrack.config import Settings
from calltrack.errors import ApiError, ServiceError, StoreUnavailable
from calltrack.hooks.deliverer import Deliverer
from calltrack.render.json import CONTENT_TYPE, envelope, error_body, internal_error_body
from calltrack.store import Store, open_store

if TYPE_CHECKING:
    from calltrack.api.telephony import Posted, Refusal
    from calltrack.api.tracking import PostedHit
    from calltrack.tracking.hits import HitAnswer

error_log = logging.getLogger("calltrack.error")
access_log = logging.getLogger("calltrack.access")
HOUSEKEEPING_SECONDS = 3600
_T = TypeVar("_T")


@dataclass(frozen=True)
class Service:
    """What the handlers share, kept in ``app.state.service``."""

    settings: Settings
    store: Store
    owns_store: bool  # a store handed in belongs to the caller, who closes it
    # At most as many database calls at once as the pool has connections: the executor has
    # that many threads, and further calls wait their turn in its queue.
    threads: ThreadPoolExecutor
    # SQLite reads cost this process's CPU and never wait on the network (the store says so
    # with ``reads_in_process``), so they run on the event loop itself: handing them to a
    # thread costs 15-30% of the pages/s (the thread hop, and the GIL passing back and forth
    # on every row SQLite steps; bench/RESULTS.md).
    # A read is bounded by the store's deadline. Anything that may wait for a lock (writes,
    # the rate limit's counter) still goes to threads, and so does gzip, after the read: the
    # threads then never open SQLite connections of their own for reads (each one maps up to
    # 64 MiB of the file and caches 16 MiB, which counts in the worker's memory).
    reads_inline: bool
    # Sends the webhook outbox: run by the app with CALLTRACK_HOOKS_DELIVERER=workers, and
    # woken by the requests that wrote to it (else `serve` runs one in a process of its own).
    deliverer: Deliverer
    # A worker's telephony requests and hits, each kind in group commits (api/batches.py).
    telephony: GroupCommit[Posted, Refusal]
    hits: GroupCommit[PostedHit, HitAnswer]

    async def read(self, func: Callable[..., _T], *args: object) -> _T:
        """A read of the store: on the event loop where ``reads_inline`` says so, else in a
        worker thread."""
        if self.reads_inline:
            return func(*args)
        return await self.in_thread(func, *args)

    async def in_thread(self, func: Callable[..., _T], *args: object) -> _T:
        """``func(*args)`` in a worker thread, within the pool's limit.

        A plain executor rather than ``anyio.to_thread``: anyio's hand-off (a capacity
        limiter, a copied context and a Condition-guarded queue a call) cost the event loop
        more than the telephony merge itself (issue 12's profile).
        """
        future = self.threads.submit(func, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # As with anyio's threads, a call that started runs to its end before the
            # cancellation goes on: the lifespan closes the store only after its tasks' calls.
            if not future.cancel():
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await asyncio.wrap_future(future)
            raise


def create_app(settings: Settings | None = None, store: Store | None = None) -> Starlette:
    """The v3 API over ``store`` (opened from ``settings`` when not given)."""
    settings = settings or Settings.from_env()
    owns_store = store is None
    store = store or open_store(settings)
    from calltrack.api import telephony, tracking  # their handlers use this module's helpers

    # Starlette tries the routes in order: the two posted to most (a PBX's events, the
    # snippet's hits) come first, which no other route's path matches.
    routes: list[BaseRoute] = [
        Route("/telephony/generic", telephony.generic, methods=["POST"]),
        Route("/t/hit", tracking.HitEndpoint(), name="hit"),
    ]
    routes += [
        Route(path, api, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])
        for path in ("/api/", "/api", "/api/index.php")
    ]
    routes.append(Route("/healthz", healthz, methods=["GET", "HEAD"]))
    from calltrack.api.v4.routes import routes as v4_routes

    routes += v4_routes()
    routes += [
        Route("/t/{site_key}.js", tracking.snippet, methods=["GET", "HEAD"]),
        Route(
            "/telephony/zadarma/{endpoint}", telephony.zadarma_notification, methods=["GET", "POST"]
        ),
    ]
    if settings.demo_site:
        routes.append(Route("/demo/", tracking.demo_site, methods=["GET", "HEAD"]))
        routes.append(Route("/demo/{page}", tracking.demo_site, methods=["GET", "HEAD"]))
    import calltrack.console.routes  # its pages use this module's helpers

    routes += calltrack.console.routes.routes()
    routes.append(Route("/", home, methods=["GET", "HEAD"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = calltrack.console.routes.console()
    # The threads keep their SQLite connections while the process lives (anyio's retired
    # after 10 s idle): at most one a connection of the pool, as under load before.
    threads = ThreadPoolExecutor(settings.db_pool_size, thread_name_prefix="calltrack-db")
    # The deliverer's store calls get threads of their own, fewer: a backlog of deliveries
    # must not take the threads that requests wait for.
    delivery_limiter = anyio.CapacityLimiter(max(1, settings.db_pool_size // 2))

    async def deliver_in_thread(func: Callable[..., _T], *args: object) -> _T:
        return await anyio.to_thread.run_sync(func, *args, limiter=delivery_limiter)

    app.state.service = Service(
        settings=settings,
        store=store,
        owns_store=owns_store,
        threads=threads,
        reads_inline=store.reads_in_process and not settings.rate_limit,
        deliverer=Deliverer(store, settings, deliver_in_thread),
        telephony=telephony.intake(store, settings, threads),
        hits=tracking.hit_intake(store, settings.zone, threads),
    )
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(InternalErrorMiddleware)
    return app


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    service: Service = app.state.service
    try:
        await run_in_threadpool(service.store.ensure_ready)
    except StoreUnavailable as exc:
        error_log.warning("store not reachable at start, answering 503 until it is: %s", exc)
    async with anyio.create_task_group() as background:
        background.start_soon(housekeeping, service)
        background.start_soon(telephony_sweeper, service)
        if service.settings.hooks_deliverer == "workers":
            background.start_soon(service.deliverer.run)
        yield
        background.cancel_scope.cancel()
    if service.owns_store:
        service.store.close()


async def telephony_sweeper(service: Service) -> None:
    """Every ``CALLTRACK_SWEEP_SECONDS`` at most: end calls left open for hours, and write the
    records of ended calls whose request could not (the store was busy, or the process died
    between the steps)."""
    from calltrack.telephony.service import sweep

    while True:
        await anyio.sleep(random.uniform(0.5, 1.0) * service.settings.sweep_seconds)
        try:
            await service.in_thread(sweep, service.store, service.settings, int(time.time()))
        except StoreUnavailable as exc:
            error_log.warning("telephony sweep skipped, the store is unavailable: %s", exc)
        except Exception:
            error_log.exception("telephony sweep failed; the service goes on")


async def housekeeping(service: Service) -> None:
    """Now and then, forget the visits, page views and holds no call can need any more, webhook
    attempts older than 30 days and deletes older than the changes feed keeps.

    Every worker does it, at random times within the hour (deleting what another worker
    deleted already costs nothing)."""
    while True:
        await anyio.sleep(random.uniform(0.5, 1.0) * HOUSEKEEPING_SECONDS)
        try:
            await service.in_thread(service.store.prune_tracking)
            await service.in_thread(service.store.prune_hooks)
            await service.in_thread(service.store.prune_changes, service.settings.changes_days)
        except StoreUnavailable as exc:
            error_log.warning("housekeeping skipped, the store is unavailable: %s", exc)
        except Exception:
            error_log.exception("housekeeping failed; the service goes on")


# -- handlers ---------------------------------------------------------------------------------


async def api(request: Request) -> Response:
    """A v3 request: its answer, or its documented error in the envelope."""
    service = service_of(request)
    settings = service.settings
    parsed = parse(request.scope["query_string"], settings.zone)
    body = await read_body(request, settings.max_body_bytes)
    gzip = settings.gzip_level > 0 and accepts_gzip(request.headers.get("accept-encoding", ""))
    try:
        result = await answer(service, parsed, request.method, body, gzip)
    except ApiError as exc:
        headers = {"allow": allowed_http_methods(parsed)} if exc.status_code == 405 else {}
        inbound = {"error": exc.message, **exc.details()}
        return reply(request, envelope(inbound), exc.status_code, headers)
    except ServiceError as exc:
        error_log.warning("%s: %s", type(exc).__name__, exc)
        retry = str(exc.retry_after or settings.retry_after)
        return reply(request, error_body(exc.message), exc.status_code, {"retry-after": retry})
    if parsed.method == "put":
        service.deliverer.wake()  # a call/put may have written webhook deliveries
    headers = {"vary": "Accept-Encoding"}
    if result.content_encoding:
        headers["content-encoding"] = result.content_encoding
    # Other formats than a JSON page stream: the page is rendered chunk by chunk as it is sent.
    return reply(request, result.body, 200, headers, result.content_type)


async def healthz(request: Request) -> Response:
    """``ok`` while the database answers, else 503 with the time to retry after."""
    service = service_of(request)
    try:
        await service.in_thread(service.store.ping)
    except StoreUnavailable:
        retry = {"retry-after": str(service.settings.retry_after)}
        return reply(request, b"unavailable\n", 503, retry, media_type=None)
    return reply(request, b"ok\n", media_type="text/plain")


async def home(request: Request) -> Response:
    """What this server is, for a person who opens its address in a browser."""
    return reply(request, home_page(), media_type=HOME_CONTENT_TYPE)


# -- answering --------------------------------------------------------------------------------


async def answer(
    service: Service, parsed: V3Request, http_method: str, body: bytes | None, gzip: bool
) -> Answer:
    """The handler's answer, gzip-encoded when asked; run where ``Service`` says it belongs."""
    if service.reads_inline and http_method in READ_HTTP_METHODS:
        result = handle(service.store, service.settings, parsed, http_method, body)
        if gzip:
            result = await service.in_thread(compress, result, service.settings.gzip_level)
        return result
    return await service.in_thread(handle_and_compress, service, parsed, http_method, body, gzip)


def handle_and_compress(
    service: Service, parsed: V3Request, http_method: str, body: bytes | None, gzip: bool
) -> Answer:
    """In a worker thread: the answer, and its gzip encoding in the same hop."""
    result = handle(service.store, service.settings, parsed, http_method, body)
    return compress(result, service.settings.gzip_level) if gzip else result


def compress(result: Answer, level: int) -> Answer:
    """``result`` gzip-encoded, or as it is when too small to be worth it."""
    if (encoded := gzip_answer(result, level)) is not None:
        return replace(encoded, content_encoding="gzip")
    return result


def reply(
    request: Request,
    body: bytes | Iterator[bytes],
    status: int = 200,
    headers: dict[str, str] | None = None,
    media_type: str | None = CONTENT_TYPE,
) -> Response:
    """The response; for HEAD, the same headers without the body (the one place HEAD is made).

    A HEAD of whole bytes says their length; a streamed answer is not rendered for HEAD.
    """
    headers = dict(headers or {})
    if request.method == "HEAD":
        if isinstance(body, bytes):
            headers["content-length"] = str(len(body))
        return Response(b"", status, headers=headers, media_type=media_type)
    if isinstance(body, bytes):
        return Response(body, status, headers=headers, media_type=media_type)
    return StreamingResponse(body, status, headers=headers, media_type=media_type)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body for POST and PUT (b"" for other methods); None past ``limit`` bytes.

    Reading stops at the limit, so an oversized body never sits in memory whole.
    """
    if request.method not in ("POST", "PUT"):
        return b""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class InternalErrorMiddleware:
    """Anything unexpected: logged with a request id, answered 500 without a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            request_id = uuid.uuid4().hex[:16]
            error_log.exception("internal error, request id %s", request_id)
            if started:
                raise
            body = internal_error_body(request_id)
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", CONTENT_TYPE.encode()),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


class AccessLogMiddleware:
    """One line per request, with the API key segment of the query string redacted.

    Keys travel in the URL, so the server's own access log is off and this one is used.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        size = 0

        async def recording_send(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                query = redact_query(scope.get("query_string", b"")).decode("latin-1")
                target = scope["path"] + ("?" + query if query else "")
                client = scope.get("client") or ("-", 0)
                access_log.info(
                    '%s "%s %s" %d %d %.1fms',
                    client[0],
                    scope["method"],
                    target,
                    status,
                    size,
                    (time.perf_counter() - started) * 1000,
                )
