"""Where a PBX posts its events: ``POST /telephony/generic`` (bearer secret; one event or a
JSON array) and ``POST /telephony/zadarma/{endpoint}`` (Zadarma's signed notifications).

Answers: 200 ``{"ok": true}``; 401 for a bad secret or signature; 413 for a body over 1 MiB;
422 with the reason for an invalid event; 503 with ``Retry-After`` when the store is
unavailable. Nothing is stored on an error, and an event delivered again changes nothing.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from calltrack.api.app import Service, read_body, reply, service_of
from calltrack.errors import StoreUnavailable
from calltrack.store.telephony import TelephonyEndpoint
from calltrack.telephony import zadarma
from calltrack.telephony.events import TelephonyEvent
from calltrack.telephony.generic import InvalidEvent, parse_events
from calltrack.telephony.service import receive, receive_by_secret

MAX_EVENTS_BYTES = 1024 * 1024
JSON = "application/json"
OK = b'{"ok":true}'
REFUSED = "unknown or revoked secret"


async def generic(request: Request) -> Response:
    """Events in the generic format, authorised by the endpoint's bearer secret."""
    service = service_of(request)
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return _error(request, 401, "expected Authorization: Bearer <the endpoint's secret>")
    body = await read_body(request, MAX_EVENTS_BYTES)
    now = int(time.time())
    try:
        # One trip to a worker thread for the secret's endpoint and the events (each trip
        # costs about as much as the merge itself).
        refused = await service.in_thread(_generic, service, secret.strip(), body, now)
    except StoreUnavailable:
        return _unavailable(request)
    if refused is not None:
        return _error(request, *refused)
    service.deliverer.wake()  # the events may have written webhook deliveries
    return reply(request, OK, media_type=JSON)


def _generic(service: Service, secret: str, body: bytes | None, now: int) -> tuple[int, str] | None:
    """Authorise, parse and receive a generic request (in a worker thread): None when the
    events are in, else the status and reason it is refused with (401 before 413 and 422)."""
    store, settings = service.store, service.settings
    events: list[TelephonyEvent] | None = None
    invalid = ""
    if body is not None:
        try:
            events = parse_events(body, settings.zone, now)
        except InvalidEvent as exc:
            invalid = str(exc)
    if events is not None and store.row_locks:
        # Where rows lock (PostgreSQL), the secret is looked up in the merge's transaction.
        if receive_by_secret(store, secret, events, settings, now):
            return None
        return 401, REFUSED
    endpoint = store.endpoint_by_secret(secret)
    if endpoint is None:
        return 401, REFUSED
    if body is None:
        return 413, f"a request holds at most {MAX_EVENTS_BYTES} bytes"
    if events is None:
        return 422, invalid
    receive(store, endpoint, events, settings, now)
    return None


async def zadarma_notification(request: Request) -> Response:
    """A Zadarma PBX notification, its ``Signature`` checked with the endpoint's secret;
    the ``zd_echo`` check (Zadarma confirming the address) is answered with its value."""
    service = service_of(request)
    if "zd_echo" in request.query_params:
        answer = zadarma.echo_reply(request.query_params)
        if answer is None:
            return _error(request, 422, "zd_echo is not a value Zadarma sends")
        return Response(answer.encode(), 200, media_type="text/plain")
    if request.method != "POST":
        return _error(request, 405, "notifications are posted (POST)")
    key = str(request.path_params["endpoint"])
    try:
        endpoint = await service.in_thread(service.store.endpoint_by_id, key, "zadarma")
    except StoreUnavailable:
        return _unavailable(request)
    body = await read_body(request, MAX_EVENTS_BYTES)
    if body is None:
        return _error(request, 413, f"a request holds at most {MAX_EVENTS_BYTES} bytes")
    try:
        form = dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=100))
    except (UnicodeDecodeError, ValueError):
        return _error(request, 422, "the body is not a form (application/x-www-form-urlencoded)")
    signature = request.headers.get("signature", "")
    if endpoint is None or not zadarma.verify(form, signature, endpoint.signing_secret):
        # One answer for an unknown endpoint and a wrong signature: neither tells the other.
        return _error(request, 401, "unknown endpoint or bad signature")
    now = int(time.time())
    try:
        event = zadarma.parse(form, service.settings.zone)
    except ValueError as exc:
        return _error(request, 422, str(exc))
    if event is None:  # a notification the service does not use (NOTIFY_IVR, ...)
        return reply(request, OK, media_type=JSON)
    return await _receive(request, endpoint, [event], now)


async def _receive(
    request: Request, endpoint: TelephonyEndpoint, events: list[TelephonyEvent], now: int
) -> Response:
    service = service_of(request)
    try:
        await service.in_thread(receive, service.store, endpoint, events, service.settings, now)
    except StoreUnavailable:
        return _unavailable(request)
    service.deliverer.wake()  # the events may have written webhook deliveries
    return reply(request, OK, media_type=JSON)


def _error(request: Request, status: int, message: str) -> Response:
    return reply(request, msgspec.json.encode({"error": message}), status, media_type=JSON)


def _unavailable(request: Request) -> Response:
    retry = str(service_of(request).settings.retry_after)
    body = msgspec.json.encode({"error": "service temporarily unavailable"})
    return reply(request, body, 503, {"retry-after": retry}, JSON)
