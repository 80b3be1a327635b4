"""The optional per-key rate limit: off by default, shared by every worker on one store."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from calltrack.api.app import create_app
from calltrack.render.json import error_body
from calltrack.store import Store
from tests.conftest import new_account

MakeClient = Callable[..., tuple[TestClient, Store]]


def url(key: str) -> str:
    return f"/api/?json/v3/{key}/call/get/0/2020-01-01/2020-01-02"


def test_without_a_limit_a_key_is_never_throttled(make_client: MakeClient) -> None:
    http, store = make_client()
    _, key = new_account(store, "a")
    answers = [http.get(url(key)) for _ in range(30)]
    assert {a.status_code for a in answers} == {200}


def test_a_key_past_its_limit_gets_429_with_retry_after(make_client: MakeClient) -> None:
    http, store = make_client(rate_limit=3, rate_window=3600)
    _, key = new_account(store, "a")
    _, other = new_account(store, "b")
    statuses = [http.get(url(key)).status_code for _ in range(3)]
    throttled = http.get(url(key))
    assert statuses == [200, 200, 200]
    assert throttled.status_code == 429
    assert throttled.content == error_body("Too many requests")
    assert 1 <= int(throttled.headers["retry-after"]) <= 3600
    assert http.get(url(other)).status_code == 200  # another key has its own count


def test_the_count_is_shared_by_every_app_on_the_store(make_client: MakeClient) -> None:
    first, store = make_client(rate_limit=4, rate_window=3600)
    _, key = new_account(store, "a")
    with TestClient(create_app(store.settings, store)) as second:
        statuses = [(first if i % 2 else second).get(url(key)).status_code for i in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_an_unknown_key_is_not_counted_nor_throttled(make_client: MakeClient) -> None:
    http, _ = make_client(rate_limit=1, rate_window=3600)
    answers = [http.get(url("0123456789abcdef")).json() for _ in range(3)]
    assert {a["inbound"]["error"] for a in answers} == {"User is not recognized"}
