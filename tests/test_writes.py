"""call/put and call/delete: writing calls through the API with a user key."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.testclient import TestClient

from calltrack import access
from calltrack.store import Store
from tests.conftest import new_account
from tests.helpers_calls import api, dump, record, seed, seen_ids

MakeClient = Callable[..., tuple[TestClient, Store]]
Client = tuple[TestClient, Store]


def put(http: TestClient, key: str, body: bytes, verb: str = "POST") -> Any:
    return http.request(verb, f"/api/?json/v3/{key}/call/put", content=body)


def test_put_imports_a_json_array_and_answers_the_counts(client: Client) -> None:
    http, store = client
    _owner, key = new_account(store, "a")
    body = msgspec.json.encode([record("p1"), record("p2", callTime="2020-05-01 11:00:00")])
    answer = put(http, key, body)
    assert answer.status_code == 200
    assert answer.json()["inbound"] == {"result": "ok", "imported": 2, "updated": 0}
    assert answer.json()["payload"] == []
    assert seen_ids(http, key, "get") == ["p1", "p2"]


def test_put_twice_updates_instead_of_duplicating(client: Client) -> None:
    http, store = client
    owner, key = new_account(store, "a")
    body = msgspec.json.encode([record("p1", duration=5)])
    put(http, key, body, "PUT")
    again = put(http, key, msgspec.json.encode([record("p1", duration=9)]), "PUT")
    assert again.json()["inbound"] == {"result": "ok", "imported": 0, "updated": 1}
    assert [c["duration"] for c in dump(store, owner)] == [9]


def test_a_bad_record_names_its_line_and_keeps_nothing(client: Client) -> None:
    http, store = client
    owner, key = new_account(store, "a")
    body = b"[\n" + msgspec.json.encode(record("ok")) + b",\n" + b'{"duration": "x"}\n]'
    answer = put(http, key, body).json()
    assert answer["inbound"]["error"] == "Call data is not valid"
    assert answer["inbound"]["line"] == 3
    assert "duration" in answer["inbound"]["reason"]
    assert dump(store, owner) == []


def test_put_cannot_take_over_another_accounts_call(client: Client) -> None:
    http, store = client
    other, _ = new_account(store, "other")
    seed(store, other, "theirs")
    _, key = new_account(store, "a")
    answer = put(http, key, msgspec.json.encode([record("theirs", duration=1)])).json()
    assert answer["inbound"]["error"] == "Call data is not valid"
    assert "another account" in answer["inbound"]["reason"]
    assert dump(store, other)[0]["duration"] == 0


def test_a_body_over_the_limit_is_refused_with_413(make_client: MakeClient) -> None:
    http, store = make_client(max_body_bytes=200)
    owner, key = new_account(store, "a")
    body = msgspec.json.encode([record(f"id{i}") for i in range(10)])
    answer = put(http, key, body)
    assert answer.status_code == 413
    assert answer.json()["inbound"] == {"error": "Request body is too large"}
    assert dump(store, owner) == []


def test_put_with_get_is_refused_with_405(client: Client) -> None:
    http, store = client
    _, key = new_account(store, "a")
    answer = http.get(f"/api/?json/v3/{key}/call/put")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST, PUT"
    assert answer.json()["inbound"] == {"error": "HTTP method is not allowed for this method"}


def test_a_role_key_cannot_put(client: Client) -> None:
    http, store = client
    grantor, _ = new_account(store, "grantor")
    grantee, _ = new_account(store, "grantee")
    grant = store.create_grant(store.create_role(grantor, "r").id, grantee)
    role_key = access.issue_role_key(store, grant)
    answer = put(http, role_key, msgspec.json.encode([record("x")])).json()
    assert answer["inbound"]["error"] == "User is not recognized"
    assert store.count_calls() == 0


def test_delete_removes_an_own_call_once(client: Client) -> None:
    http, store = client
    owner, key = new_account(store, "a")
    seed(store, owner, "d1", "d2")
    first = http.delete(f"/api/?json/v3/{key}/call/delete/d1").json()
    second = http.post(f"/api/?json/v3/{key}/call/delete/d1").json()
    assert first["inbound"] == {"result": "ok", "deleted": 1}
    assert second["inbound"] == {"result": "ok", "deleted": 0}
    assert seen_ids(http, key, "get") == ["d2"]


def test_delete_of_another_accounts_call_changes_nothing_and_reveals_nothing(
    client: Client,
) -> None:
    http, store = client
    other, _ = new_account(store, "other")
    seed(store, other, "theirs")
    _, key = new_account(store, "a")
    answer = http.delete(f"/api/?json/v3/{key}/call/delete/theirs").json()
    absent = http.delete(f"/api/?json/v3/{key}/call/delete/never-existed").json()
    assert answer["inbound"] == absent["inbound"] == {"result": "ok", "deleted": 0}
    assert [c["universalId"] for c in dump(store, other)] == ["theirs"]


def test_delete_needs_a_call_id_and_a_writing_http_method(client: Client) -> None:
    http, store = client
    owner, key = new_account(store, "a")
    seed(store, owner, "d1")
    missing = http.delete(f"/api/?json/v3/{key}/call/delete").json()
    by_get = http.get(f"/api/?json/v3/{key}/call/delete/d1")
    assert missing["inbound"] == {"error": "Call id is not set"}
    assert by_get.status_code == 405
    assert seen_ids(http, key, "get") == ["d1"]


def test_a_deleted_call_can_be_put_again(client: Client) -> None:
    http, store = client
    owner, key = new_account(store, "a")
    seed(store, owner, "d1")
    http.delete(f"/api/?json/v3/{key}/call/delete/d1")
    answer = put(http, key, msgspec.json.encode([record("d1")])).json()
    assert answer["inbound"] == {"result": "ok", "imported": 1, "updated": 0}


def test_a_put_larger_than_a_write_batch_keeps_nothing_when_its_last_record_is_bad(
    client: Client,
) -> None:
    # The store writes in batches: a bad record in a later batch must roll back the earlier
    # ones too (one transaction per put), including updates of calls already stored.
    http, store = client
    owner, key = new_account(store, "a")
    seed(store, owner, "kept")
    batch = inspect.signature(store.import_calls).parameters["batch_size"].default
    good = [record("kept", duration=7)]
    good += [record(f"b{i}", callTime="2020-05-02 10:00:00") for i in range(batch)]
    body = msgspec.json.encode([*good, {"duration": "x"}])
    answer = put(http, key, body).json()
    assert answer["inbound"]["error"] == "Call data is not valid"
    assert store.count_calls() == 1
    assert [(c["universalId"], c["duration"]) for c in api(http, key, "get")] == [("kept", 0)]
