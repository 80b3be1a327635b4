"""Where a PBX posts its events: ``POST /telephony/generic`` (bearer secret; one event or a
JSON array) and ``POST /telephony/zadarma/{endpoint}`` (Zadarma's signed notifications).

Answers: 200 ``{"ok": true}``; 401 for a bad secret or signature; 413 for a body over 1 MiB;
422 with the reason for an invalid event; 503 with ``Retry-After`` when the store is
unavailable. Nothing is stored on an error, and an event delivered again changes nothing.

The requests of a worker are merged in group commits (``GroupCommit``): those that arrive
while one transaction runs go together in the next.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from calltrack.api.app import read_body, reply, service_of
from calltrack.api.batches import GroupCommit
from calltrack.config import Settings
from calltrack.errors import StoreUnavailable
from calltrack.store import Store
from calltrack.store.telephony import TelephonyEndpoint
from calltrack.telephony import zadarma
from calltrack.telephony.events import TelephonyEvent
from calltrack.telephony.generic import InvalidEvent, parse_events
from calltrack.telephony.service import Delivery, receive_batch

MAX_EVENTS_BYTES = 1024 * 1024
JSON = "application/json"
OK = b'{"ok":true}'
REFUSED = "unknown or revoked secret"
# Requests a transaction merges at most: enough that a busy worker's queue goes in one or
# two, few enough that a batch's transaction stays short.
BATCH_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Posted:
    """A request's events as its batch takes them: a generic endpoint's bearer secret and
    body (None when over the limit), or a checked endpoint's parsed events (Zadarma)."""

    secret: str = ""
    body: bytes | None = None
    endpoint: TelephonyEndpoint | None = None
    events: list[TelephonyEvent] | None = None


# None when the events are in, else the status and reason the request is refused with.
Refusal = tuple[int, str] | None


def intake(store: Store, settings: Settings, threads: Executor) -> GroupCommit[Posted, Refusal]:
    """The group commit a worker's telephony requests go through."""
    return GroupCommit(lambda posts: receive_posted(store, settings, posts), threads, BATCH_LIMIT)


async def generic(request: Request) -> Response:
    """Events in the generic format, authorised by the endpoint's bearer secret."""
    service = service_of(request)
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return _error(request, 401, "expected Authorization: Bearer <the endpoint's secret>")
    body = await read_body(request, MAX_EVENTS_BYTES)
    try:
        refused = await service.telephony.submit(Posted(secret.strip(), body))
    except StoreUnavailable:
        return _unavailable(request)
    if refused is not None:
        return _error(request, *refused)
    service.deliverer.wake()  # the events may have written webhook deliveries
    return reply(request, OK, media_type=JSON)


def receive_posted(
    store: Store, settings: Settings, posts: list[Posted]
) -> list[Refusal | Exception]:
    """Authorise, parse and receive a batch of requests (in a worker thread), all merged in
    one transaction: for each, None when its events are in, the status and reason it is
    refused with (401 before 413 and 422), or the exception that refused it."""
    now = int(time.time())
    refusals: list[Refusal | Exception] = [None] * len(posts)
    deliveries: list[Delivery] = []
    places: list[int] = []
    endpoints: dict[str, TelephonyEndpoint | None] = {}
    for place, post in enumerate(posts):
        if post.endpoint is not None and post.events is not None:
            deliveries.append(Delivery(post.events, post.endpoint))
            places.append(place)
            continue
        events: list[TelephonyEvent] | None = None
        invalid = ""
        if post.body is not None:
            try:
                events = parse_events(post.body, settings.zone, now)
            except InvalidEvent as exc:
                invalid = str(exc)
        if events is not None and store.row_locks:
            # Where rows lock (PostgreSQL), the secret is looked up in the merge's transaction.
            deliveries.append(Delivery(events, secret=post.secret))
            places.append(place)
            continue
        if post.secret not in endpoints:
            endpoints[post.secret] = store.endpoint_by_secret(post.secret)
        endpoint = endpoints[post.secret]
        if endpoint is None:
            refusals[place] = 401, REFUSED
        elif events is None and post.body is None:
            refusals[place] = 413, f"a request holds at most {MAX_EVENTS_BYTES} bytes"
        elif events is None:
            refusals[place] = 422, invalid
        else:
            deliveries.append(Delivery(events, endpoint))
            places.append(place)
    for place, outcome in zip(places, receive_batch(store, settings, deliveries, now), strict=True):
        if isinstance(outcome, Exception):
            refusals[place] = outcome
        elif not outcome:
            refusals[place] = 401, REFUSED
    return refusals


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
    try:
        event = zadarma.parse(form, service.settings.zone)
    except ValueError as exc:
        return _error(request, 422, str(exc))
    if event is None:  # a notification the service does not use (NOTIFY_IVR, ...)
        return reply(request, OK, media_type=JSON)
    try:
        await service.telephony.submit(Posted(endpoint=endpoint, events=[event]))
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
