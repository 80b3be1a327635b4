"""Sending what the outbox holds: one deliverer per ``calltrack serve`` process (and
``calltrack hooks run``).

The deliverer keeps up to ``CALLTRACK_HOOKS_CONCURRENCY`` deliveries in flight: it claims due
ones (a lease, so no other process sends them meanwhile), sends each once, and records the
attempts in batches. A request that wrote deliveries wakes it; otherwise it looks every
``POLL_SECONDS``. Whatever goes wrong between a claim and its record, the lease runs out and
the delivery is sent again: a receiver deduplicates by ``webhook-id``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import anyio
import httpcore2
import msgspec

from calltrack import __version__
from calltrack.config import Settings
from calltrack.errors import StoreUnavailable
from calltrack.hooks.payload import render, request_parts
from calltrack.hooks.schedule import next_delay, parse_retry_after, parse_schedule
from calltrack.hooks.signing import secret_key, sign
from calltrack.hooks.targets import AllowList, GuardedBackend
from calltrack.store import Store
from calltrack.store.hooks import AttemptResult, ClaimedDelivery, Outcome, unix_ms
from calltrack.telephony.service import started_record

log = logging.getLogger("calltrack.hooks")
_T = TypeVar("_T")
InThread = Callable[..., Awaitable[Any]]

USER_AGENT: Final = f"calltrack-webhooks/{__version__}"
POLL_SECONDS: Final = 0.5
# A deliverer no request can wake (`calltrack hooks run`, the one `serve` starts) looks
# this often: a cheap indexed read, and a call's delivery within a tenth of a second.
UNWOKEN_POLL_SECONDS: Final = 0.1
# A claim's lease outlasts the attempt's timeout by this much, plus twice the store's
# timeout (rendering a payload, recording the attempt): until it runs out, no other
# deliverer sends the delivery.
LEASE_MARGIN_SECONDS: Final = 5
# While an import keeps the calls' ``hooks`` from being brought up to date, that is tried
# again this often (else the export would show old statuses until some later attempt).
SHOW_RETRY_SECONDS: Final = 1.0
# What is read of a receiver's answer: its status and headers matter, not its body.
ANSWER_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt got."""

    status: int  # 0: no HTTP answer
    duration_ms: int
    error: str
    retry_after: float | None
    body: bytes


class Sender:
    """Signed HTTP requests to endpoints: never a redirect followed, never a private address
    (``targets``), a timeout over the whole exchange."""

    def __init__(self, settings: Settings) -> None:
        self._timeout = settings.hooks_timeout
        self._pool = httpcore2.AsyncConnectionPool(
            network_backend=GuardedBackend(AllowList.parse(settings.hooks_allow_hosts)),
            max_connections=max(settings.hooks_concurrency, 1) * 2,
            keepalive_expiry=30,
        )

    async def __aenter__(self) -> Sender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pool.aclose()

    async def send(
        self,
        url: str,
        method: str,
        message_id: str,
        payload: bytes,
        secrets: tuple[str, ...],
    ) -> Answer:
        target, body, signed = request_parts(url, method, payload)
        timestamp = int(time.time())
        headers = [
            (b"webhook-id", message_id.encode()),
            (b"webhook-timestamp", str(timestamp).encode()),
            (
                b"webhook-signature",
                sign([secret_key(s) for s in secrets], message_id, timestamp, signed).encode(),
            ),
            (b"user-agent", USER_AGENT.encode()),
        ]
        if body:
            headers.append((b"content-type", b"application/json"))
        started = time.monotonic()
        status, error, retry_after, answer = 0, "", None, b""
        limit = {"connect": self._timeout, "read": self._timeout, "write": self._timeout}
        try:
            with anyio.fail_after(self._timeout):
                async with self._pool.stream(
                    method,
                    target,
                    headers=headers,
                    content=body,
                    extensions={"timeout": {**limit, "pool": self._timeout}},
                ) as response:
                    status = response.status
                    async for chunk in response.aiter_stream():
                        answer += chunk
                        if len(answer) >= ANSWER_BYTES:
                            break
                    found = {name.lower(): value for name, value in response.headers}
                    retry_after = parse_retry_after(_text(found.get(b"retry-after")), time.time())
                    if 300 <= status < 400:
                        error = "a redirect, not followed"
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
        except httpcore2.TimeoutException as exc:
            error = f"timed out: {exc or type(exc).__name__}"
        except httpcore2.ConnectError as exc:
            error = f"cannot connect: {exc}"
        except (httpcore2.NetworkError, httpcore2.ProtocolError) as exc:
            error = f"connection failed: {exc or type(exc).__name__}"
        except httpcore2.UnsupportedProtocol as exc:
            error = f"unsupported URL: {exc}"
        duration = int((time.monotonic() - started) * 1000)
        if status and not 200 <= status < 300 and not error:
            error = f"answered {status}"
        return Answer(status, duration, error, retry_after, answer[:ANSWER_BYTES])


def outcome(
    answer: Answer, attempts_before: int, schedule: tuple[float, ...], now_ms: int
) -> tuple[Outcome, int]:
    """What an answer means for its delivery: (outcome, unix ms of the next try)."""
    if 200 <= answer.status < 300:
        return "delivered", 0
    if answer.status == 410:
        return "gone", 0
    asked = answer.retry_after if answer.status in (429, 503) else None
    delay = next_delay(attempts_before + 1, schedule, asked)
    if delay is None:
        return "failed", 0
    return "retry", now_ms + int(delay * 1000)


class Deliverer:
    """The outbox's sender in one process."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        in_thread: InThread,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._poll = poll_seconds
        self._store = store
        self._settings = settings
        self._in_thread = in_thread
        self._schedule = parse_schedule(settings.hooks_schedule)
        self._slots = settings.hooks_concurrency
        lease = settings.hooks_timeout + 2 * settings.db_timeout + LEASE_MARGIN_SECONDS
        self._lease_ms = int(lease * 1000)
        self._in_flight = 0
        self._wake = anyio.Event()
        self._results: list[AttemptResult] = []
        self._results_ready = anyio.Event()
        self._claims_failing = False
        self._backlog = False

    def wake(self) -> None:
        """Look for due deliveries now (a request just wrote some). From the event loop."""
        self._wake.set()

    async def run(self) -> None:
        # A claim is a write: after the first, wait until a quarter of the slots are free
        # (or a poll passed) rather than claiming one delivery per finished one.
        batch = max(1, self._slots // 4)
        timed_out = True
        async with Sender(self._settings) as sender, anyio.create_task_group() as tasks:
            tasks.start_soon(self._recorder)
            while True:
                free = self._slots - self._in_flight
                if free > 0 and (free >= batch or timed_out or self._in_flight == 0):
                    for delivery in await self._claim(free):
                        self._in_flight += 1
                        tasks.start_soon(self._deliver, sender, delivery)
                timed_out = await self._idle()

    async def _idle(self) -> bool:
        """Wait for a wake or a poll; whether the poll passed."""
        timed_out = True
        with anyio.move_on_after(self._poll):
            await self._wake.wait()
            timed_out = False
        self._wake = anyio.Event()
        return timed_out

    async def _claim(self, limit: int) -> list[ClaimedDelivery]:
        now = unix_ms()
        try:
            claimed: list[ClaimedDelivery] = []
            # The cheap read first, unless the last claim was full (a backlog: surely more).
            if self._backlog or await self._in_thread(self._store.any_due, now):
                claimed = await self._in_thread(
                    self._store.claim_deliveries, now, self._lease_ms, limit
                )
            self._backlog = len(claimed) == limit
        except StoreUnavailable as exc:
            if not self._claims_failing:  # once, not every poll of a long import
                log.warning("webhooks: cannot claim deliveries, the store is unavailable: %s", exc)
            self._claims_failing = True
            return []
        if self._claims_failing:
            log.info("webhooks: claiming deliveries again")
            self._claims_failing = False
        return claimed

    async def _deliver(self, sender: Sender, delivery: ClaimedDelivery) -> None:
        try:
            payload = delivery.payload
            if payload is None:
                payload = await self._in_thread(
                    _render_started, self._store, self._settings, delivery
                )
                await self._in_thread(self._store.save_payload, delivery.id, payload)
            answer = await sender.send(
                delivery.url, delivery.method, delivery.message_id, payload, delivery.secrets
            )
            now = unix_ms()
            kind, next_at = outcome(answer, delivery.attempts, self._schedule, now)
            self._results.append(
                AttemptResult(
                    delivery_id=delivery.id,
                    endpoint_id=delivery.endpoint_id,
                    attempted_at=now,
                    status=answer.status,
                    duration_ms=answer.duration_ms,
                    error=answer.error,
                    outcome=kind,
                    next_at=next_at,
                )
            )
            self._results_ready.set()
        except StoreUnavailable as exc:  # its lease runs out and it is tried again
            log.warning(
                "webhooks: delivery %s put off, the store is unavailable: %s",
                delivery.message_id,
                exc,
            )
        except Exception:
            log.exception("webhooks: delivery %s failed unexpectedly", delivery.message_id)
        finally:
            self._in_flight -= 1
            self._wake.set()

    async def _recorder(self) -> None:
        """Write attempts in batches, then bring the calls' ``hooks`` up to date."""
        disable_after_ms = int(self._settings.hooks_disable_after * 1000)
        # Statuses recorded but not shown yet (an import held the calls, or a process died
        # between recording and showing them): at the start too, once.
        unshown = True
        while True:
            with anyio.move_on_after(SHOW_RETRY_SECONDS if unshown else math.inf):
                await self._results_ready.wait()
            self._results_ready = anyio.Event()
            batch, self._results = self._results, []
            if batch:
                try:
                    await self._in_thread(self._store.record_attempts, batch, disable_after_ms)
                except StoreUnavailable as exc:
                    log.warning(
                        "webhooks: attempts not recorded yet, the store is unavailable: %s", exc
                    )
                    self._results = batch + self._results
                    await anyio.sleep(1)
                    self._results_ready.set()
                    continue
                self._wake.set()  # the next deliveries of these calls may go now
            try:
                await self._in_thread(self._store.show_delivery_statuses)
                unshown = False
            except StoreUnavailable:  # an import holds the calls: again soon, not never
                unshown = True


def _render_started(store: Store, settings: Settings, delivery: ClaimedDelivery) -> bytes:
    """The payload of a BEFORE_CALL_START, from its call as it stood when it started."""
    record = None
    if delivery.telephony_call is not None:
        record = started_record(store, settings, delivery.telephony_call)
    if record is None:  # the call is gone: what is known of it
        record = b'{"universalId":' + _quoted(delivery.universal_id) + b"}"
    return render(delivery.event, record, delivery.method)


def _quoted(text: str) -> bytes:
    return msgspec.json.encode(text)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
