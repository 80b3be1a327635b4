"""Shared helpers of test_access, test_importer and test_cli: records, imports, API reads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from starlette.testclient import TestClient

from calltrack.importer import import_bytes
from calltrack.store import ImportResult, Store
from tests.faults._common import stored_bodies

# A window wide enough for every call these tests import (they all fall in 2020).
WINDOW = "2020-01-01/2020-12-31"


def record(universal_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A minimal valid import record; ``fields`` add to or override it."""
    base: dict[str, Any] = {
        "serviceType": "calltracking",
        "status": "success",
        "callTime": "2020-05-01 10:00:00",
    }
    if universal_id is not None:
        base["universalId"] = universal_id
    base.update(fields)
    return base


def jsonl(records: Iterable[Mapping[str, Any]]) -> bytes:
    """Records as JSON Lines (non-ASCII as is)."""
    return b"\n".join(msgspec.json.encode(dict(r)) for r in records) + b"\n"


def seed(store: Store, account_id: int, *universal_ids: str) -> ImportResult:
    """Import one minimal call per id into the account, a minute apart."""
    records = [
        record(uid, callTime=f"2020-05-01 10:{minute:02d}:00")
        for minute, uid in enumerate(universal_ids)
    ]
    return import_bytes(store, account_id, jsonl(records), store.settings.zone)


def api(http: TestClient, key: str, method: str, page: int = 0, window: str = WINDOW) -> Any:
    """The decoded answer of one v3 request (a list of calls, or the error envelope)."""
    answer = http.get(f"/api/?json/v3/{key}/call/{method}/{page}/{window}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def seen_ids(http: TestClient, key: str, method: str) -> list[str] | str:
    """The universalIds one key sees on page 0 in answer order, or the error message."""
    body = api(http, key, method)
    if isinstance(body, dict):
        return str(body["inbound"]["error"])
    return [call["universalId"] for call in body]


def dump(store: Store, account_id: int) -> list[dict[str, Any]]:
    """Every stored call of an account, decoded, in page order."""
    return [json.loads(b'{"page":0,' + body) for body in stored_bodies(store, account_id)]
