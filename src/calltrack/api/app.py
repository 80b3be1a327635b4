"""The ASGI application: routes, the one place errors become answers, and the access log."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from calltrack.api.answers import Answer
from calltrack.api.encoding import accepts_gzip, gzip_answer
from calltrack.api.handler import READ_HTTP_METHODS, allowed_http_methods, handle
from calltrack.api.request import V3Request, parse, redact_query
from calltrack.config import Settings
from calltrack.errors import ApiError, ServiceError, StoreUnavailable
from calltrack.render.json import CONTENT_TYPE, envelope, error_body, internal_error_body
from calltrack.store import Store, open_store

error_log = logging.getLogger("calltrack.error")
access_log = logging.getLogger("calltrack.access")


def create_app(settings: Settings | None = None, store: Store | None = None) -> Starlette:
    """The v3 API over ``store`` (opened from ``settings`` when not given)."""
    settings = settings or Settings.from_env()
    owns_store = store is None
    store = store or open_store(settings)
    zone = settings.zone
    # At most as many database calls at once as the pool has connections.
    limiter = anyio.CapacityLimiter(settings.db_pool_size)
    # SQLite reads cost this process's CPU and never wait on the network (the store says so
    # with ``reads_in_process``), so they run on the event loop itself: handing them to a
    # thread costs 15-30% of the pages/s (the thread hop, and the GIL passing back and forth
    # on every row SQLite steps; bench/RESULTS.md).
    # A read is bounded by the store's deadline. Anything that may wait for a lock (writes,
    # the rate limit's counter) still goes to threads, and so does gzip, after the read: the
    # threads then never open SQLite connections of their own for reads (each one maps up to
    # 64 MiB of the file and caches 16 MiB, which counts in the worker's memory).
    reads_inline = store.reads_in_process and not settings.rate_limit

    def answer(body: bytes, request: Request, status: int = 200, **headers: str) -> Response:
        if request.method == "HEAD":
            headers["content-length"] = str(len(body))
            body = b""
        return Response(body, status, headers=headers, media_type=CONTENT_TYPE)

    def compress(result: Answer) -> Answer:
        if (encoded := gzip_answer(result, settings.gzip_level)) is not None:
            return replace(encoded, content_encoding="gzip")
        return result

    def respond(parsed: V3Request, http_method: str, body: bytes | None, gzip: bool) -> Answer:
        # In a worker thread, except SQLite reads (see reads_inline above).
        result = handle(store, settings, parsed, http_method, body)
        return compress(result) if gzip else result

    async def api(request: Request) -> Response:
        parsed = parse(request.scope["query_string"], zone)
        body = await read_body(request, settings.max_body_bytes)
        gzip = settings.gzip_level > 0 and accepts_gzip(request.headers.get("accept-encoding", ""))
        try:
            if reads_inline and request.method in READ_HTTP_METHODS:
                result = respond(parsed, request.method, body, gzip=False)
                if gzip:
                    result = await run_in_threadpool_limited(compress, result)
            else:
                result = await run_in_threadpool_limited(
                    respond, parsed, request.method, body, gzip
                )
        except ApiError as exc:
            headers = {"allow": allowed_http_methods(parsed)} if exc.status_code == 405 else {}
            inbound = {"error": exc.message, **exc.details()}
            return answer(envelope(inbound), request, exc.status_code, **headers)
        except ServiceError as exc:
            error_log.warning("%s: %s", type(exc).__name__, exc)
            retry = str(exc.retry_after or settings.retry_after)
            return answer(
                error_body(exc.message), request, exc.status_code, **{"retry-after": retry}
            )
        headers = {"vary": "Accept-Encoding"}
        if result.content_encoding:
            headers["content-encoding"] = result.content_encoding
        if isinstance(result.body, bytes):
            if request.method == "HEAD":
                headers["content-length"] = str(len(result.body))
                return Response(b"", headers=headers, media_type=result.content_type)
            return Response(result.body, headers=headers, media_type=result.content_type)
        if request.method == "HEAD":
            return Response(b"", headers=headers, media_type=result.content_type)
        # Other formats stream: the page is rendered chunk by chunk as it is sent.
        return StreamingResponse(result.body, headers=headers, media_type=result.content_type)

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool_limited(store.ping)
        except StoreUnavailable:
            return Response(
                b"unavailable\n", 503, headers={"retry-after": str(settings.retry_after)}
            )
        return Response(b"ok\n", 200, media_type="text/plain")

    async def run_in_threadpool_limited(func: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=limiter)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(store.ensure_ready)
        except StoreUnavailable as exc:
            error_log.warning("store not reachable at start, answering 503 until it is: %s", exc)
        yield
        if owns_store:  # a store handed in belongs to the caller
            store.close()

    routes = [
        Route(path, api, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])
        for path in ("/api/", "/api", "/api/index.php")
    ]
    routes.append(Route("/healthz", healthz, methods=["GET", "HEAD"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(InternalErrorMiddleware)
    return app


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
