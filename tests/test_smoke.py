from __future__ import annotations

import json

from starlette.testclient import TestClient

from calltrack.importer import import_bytes
from calltrack.store import Store
from tests.conftest import new_account


def test_get_returns_the_owners_imported_call(client: tuple[TestClient, Store]) -> None:
    http, store = client
    account_id, key = new_account(store, "acme")
    record = {
        "universalId": "1",
        "serviceType": "calltracking",
        "status": "success",
        "callTime": "2020-05-01 10:00:00",
    }
    import_bytes(store, account_id, json.dumps(record).encode(), store.settings.zone)
    answer = http.get(f"/api/?json/v3/{key}/call/get/0/2020-05-01/2020-05-01")
    assert answer.status_code == 200
    assert [call["universalId"] for call in answer.json()] == ["1"]
