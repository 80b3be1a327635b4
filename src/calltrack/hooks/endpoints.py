"""An account's webhook endpoints as the CLI and the console manage them: one is added only
with a URL deliveries may go to, and tested with a sample call, signed as deliveries are."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from calltrack.config import Settings
from calltrack.hooks.deliverer import Answer, Sender
from calltrack.hooks.payload import render
from calltrack.hooks.targets import AllowList, check_url
from calltrack.model import CallRecord, format_local, prepare
from calltrack.store import Store
from calltrack.store.hooks import HookEndpoint, IssuedHook


def add_endpoint(
    store: Store,
    settings: Settings,
    account_id: int,
    url: str,
    events: Sequence[str],
    method: str = "POST",
) -> IssuedHook:
    """A new endpoint and its signing secret (shown once). RefusedTarget when deliveries may
    not go to ``url`` (``CALLTRACK_HOOKS_ALLOW_HOSTS``); the URL's name is resolved here."""
    check_url(url, AllowList.parse(settings.hooks_allow_hosts))
    return store.add_hook(account_id, url, [e.upper() for e in events], method.upper())


@dataclass(frozen=True, slots=True)
class SampleDelivery:
    """What a test delivery sent, and the answer it got."""

    event: str
    message_id: str
    answer: Answer

    @property
    def ok(self) -> bool:
        return 200 <= self.answer.status < 300


def sample_record(zone: ZoneInfo) -> bytes:
    """A made-up call, as a delivery carries one (universalId starts with ``test-``)."""
    record = CallRecord(
        universalId="test-" + secrets.token_hex(8),
        serviceType="calltracking",
        status="success",
        callTime=format_local(int(time.time()), zone),
        clientNumber="79161234567",
        callerIdToClient="74950000000",
        duration=130,
        utm_source="test",
    )
    return b"{" + prepare(record, zone).body


async def send_test(
    settings: Settings, endpoint: HookEndpoint, keys: tuple[str, ...]
) -> SampleDelivery:
    """Send the endpoint a sample call of its first event now, signed by ``keys`` (its
    ``Store.hook_secrets``); nothing is recorded."""
    event = endpoint.events[0]
    payload = render(event, sample_record(settings.zone), endpoint.method)
    message_id = "msg_test_" + secrets.token_urlsafe(12)
    async with Sender(settings) as sender:
        answer = await sender.send(endpoint.url, endpoint.method, message_id, payload, keys)
    return SampleDelivery(event, message_id, answer)
