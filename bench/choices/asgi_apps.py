"""Tiny ASGI apps for the server/framework benchmark.

GET /big   -> fixed 2 MiB bytes body (stands in for one rendered page)
GET /small -> fixed 100-byte body
`raw_app` is a bare ASGI callable; `starlette_app` is the same thing in Starlette.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BIG = (b'{"x":"' + b"a" * (2 * 1024 * 1024 - 8) + b'"}')[: 2 * 1024 * 1024]
SMALL = (b'{"ok":true,"pad":"' + b"b" * 100)[:98] + b'"}'
assert len(BIG) == 2 * 1024 * 1024
assert len(SMALL) == 100

_CT = (b"content-type", b"application/json")
_START = {
    b"/big": {
        "type": "http.response.start",
        "status": 200,
        "headers": [_CT, (b"content-length", str(len(BIG)).encode())],
    },
    b"/small": {
        "type": "http.response.start",
        "status": 200,
        "headers": [_CT, (b"content-length", str(len(SMALL)).encode())],
    },
}
_BODY = {
    b"/big": {"type": "http.response.body", "body": BIG},
    b"/small": {"type": "http.response.body", "body": SMALL},
}
_404_START = {"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]}
_404_BODY = {"type": "http.response.body", "body": b""}


async def raw_app(scope, receive, send):
    if scope["type"] == "http":
        path = scope.get("raw_path") or scope["path"].encode()
        start = _START.get(path)
        if start is None:
            await send(_404_START)
            await send(_404_BODY)
            return
        await send(start)
        await send(_BODY[path])
    elif scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def big(request):
    return Response(BIG, media_type="application/json")


async def small(request):
    return Response(SMALL, media_type="application/json")


starlette_app = Starlette(routes=[Route("/big", big), Route("/small", small)])
