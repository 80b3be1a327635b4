"""The client against the project's own app, in process: pages, errors, dates, round trip."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from starlette.testclient import TestClient

from calltrack import access
from calltrack.api.app import create_app
from calltrack.client import (
    CallRecord,
    Client,
    IncorrectPage,
    UserNotRecognized,
    WrongEndDate,
    export_calls,
)
from calltrack.client._client import api_endpoint, time_segment
from calltrack.config import Settings
from calltrack.importer import import_bytes
from calltrack.store import Store, open_store
from tests.conftest import new_account

MakeClient = Callable[..., tuple[TestClient, Store]]
MOSCOW = ZoneInfo("Europe/Moscow")


def rich_call(n: int, when: str | None = None) -> dict[str, Any]:
    """A call using every kind of field, non-ASCII text included."""
    callback = n % 2 == 0
    call: dict[str, Any] = {
        "universalId": f"{10**18 + n}",
        "serviceType": "callback" if callback else "calltracking",
        "clientNumber": f"7916{n:07d}",
        "managerNumber": "74950000000",
        "statusFirst": 200,
        "statusSecond": 486 if n % 3 else 200,
        "status": "success" if n % 3 else "fail",
        "callTime": when or f"2020-05-01 {10 + n // 60:02d}:{n % 60:02d}:00",
        "localDate": f"2020-05-01 {12 + n // 60:02d}:{n % 60:02d}:00",
        "timezoneOffset": "+0200",
        "duration": n * 7,
        "tariffTime": n,
        "site": "окна-профи.рф",
        "unique": n % 2 == 1,
        "target": True,
        "visitSite": 'https://example.ru/?a=1&b="2"',
        "siteVisit": 'https://example.ru/?a=1&b="2"',
        "utm_term": "купить диван, недорого\nс доставкой",
        "city": "Москва",
        "pagesCount": 3,
        "tags": ["горячий", 'with "quotes"'] if n % 2 else [],
    }
    if callback:
        call |= {
            "cbToolId": 12,
            "cbToolName": "Виджет",
            "cbOfficeNumber": "0",
            "cbOrderDate": "2020-04-30 23:59:59",
            "cbAttemptsQueue": [1, 2, 3],
            "cbConnectType": "smartcall",
            "cbEventSource": "widget",
            "hooks": [
                {
                    "hookEventName": "AFTER_CALL_FINISH",
                    "hookAddress": "https://crm.example.com/hook",
                    "hookMethod": "POST",
                    "hookResponseStatus": 200,
                }
            ],
        }
    else:
        call |= {"ctCallId": 10**12 + n, "ctCampaignId": 5, "ctCampaignName": "Весна"}
    return call


def load(store: Store, account_id: int, calls: list[dict[str, Any]]) -> None:
    data = b"\n".join(msgspec.json.encode(call) for call in calls)
    import_bytes(store, account_id, data, store.settings.zone)


def client_of(http: TestClient, key: str) -> Client:
    return Client("http://testserver", key, transport=http._transport)


def ids(calls: list[CallRecord]) -> list[str]:
    return [call.universalId for call in calls]


def test_iter_calls_returns_every_call_once_across_pages(make_client: MakeClient) -> None:
    http, store = make_client(page_size=5)
    account, key = new_account(store, "a")
    load(store, account, [rich_call(n) for n in range(12)])
    with client_of(http, key) as client:
        calls = list(client.iter_calls("2020-05-01", "2020-05-01"))
        pages = [number for number, _ in client.iter_pages("2020-05-01", "2020-05-01")]
    assert ids(calls) == [f"{10**18 + n}" for n in range(12)]
    assert [call.page for call in calls] == [0] * 5 + [1] * 5 + [2] * 2
    assert pages == [0, 1, 2]
    assert all(isinstance(call, CallRecord) for call in calls)


def test_a_decoded_page_encodes_back_to_the_servers_own_bytes(make_client: MakeClient) -> None:
    http, store = make_client(page_size=4)
    account, key = new_account(store, "a")
    load(store, account, [rich_call(n) for n in range(6)])
    with client_of(http, key) as client:
        for number in (0, 1):
            raw = http.get(f"/api/?json/v3/{key}/call/get/{number}/2020-05-01/2020-05-01").content
            calls = client.page(number, "2020-05-01", "2020-05-01")
            assert msgspec.json.encode(calls) == raw


def test_no_rows_on_page_zero_is_an_empty_result(make_client: MakeClient) -> None:
    http, store = make_client()
    _, key = new_account(store, "a")
    with client_of(http, key) as client:
        assert client.page(0, "2020-05-01") == []
        assert list(client.iter_calls("2020-05-01")) == []


def test_a_page_past_the_last_raises_incorrect_page(make_client: MakeClient) -> None:
    http, store = make_client(page_size=5)
    account, key = new_account(store, "a")
    load(store, account, [rich_call(n) for n in range(3)])
    with client_of(http, key) as client, pytest.raises(IncorrectPage):
        client.page(1, "2020-05-01", "2020-05-01")


def test_an_unknown_key_raises_user_not_recognized(make_client: MakeClient) -> None:
    http, _ = make_client()
    with client_of(http, "0000000000000000") as client, pytest.raises(UserNotRecognized) as raised:
        list(client.iter_calls("2020-05-01"))
    assert str(raised.value) == "User is not recognized"


def test_an_impossible_end_date_raises_wrong_end_date(make_client: MakeClient) -> None:
    http, store = make_client()
    _, key = new_account(store, "a")
    with client_of(http, key) as client, pytest.raises(WrongEndDate):
        client.page(0, "2020-05-01", "2020-02-30")


def test_the_methods_reach_the_calls_each_key_may_see(make_client: MakeClient) -> None:
    http, store = make_client()
    owner, owner_key = new_account(store, "owner")
    reader, reader_key = new_account(store, "reader")
    load(store, owner, [rich_call(0)])
    load(store, reader, [rich_call(1)])
    role = store.create_role(owner, "sales")
    grant = store.create_grant(role.id, reader)
    role_key = access.issue_role_key(store, grant)
    window = ("2020-05-01", "2020-05-01")
    with client_of(http, reader_key) as mine, client_of(http, role_key) as shared:
        assert ids(list(mine.iter_calls(*window))) == [f"{10**18 + 1}"]
        assert ids(list(mine.iter_calls(*window, method="getWithRole"))) == [
            f"{10**18}",
            f"{10**18 + 1}",
        ]
        assert ids(list(shared.iter_calls(*window, method="getByRole"))) == [f"{10**18}"]
    with client_of(http, owner_key) as client, pytest.raises(UserNotRecognized):
        client.page(0, *window, method="getByRole")  # a user key with getByRole


def test_dates_datetimes_and_strings_select_the_same_calls(make_client: MakeClient) -> None:
    http, store = make_client()
    account, key = new_account(store, "a")
    load(store, account, [rich_call(0, "2020-05-01 00:00:00"), rich_call(1, "2020-05-01 23:59:59")])
    load(store, account, [rich_call(2, "2020-04-30 23:59:59"), rich_call(3, "2020-05-02 00:00:00")])
    start = datetime(2020, 5, 1, tzinfo=MOSCOW)
    end = datetime(2020, 5, 1, 23, 59, 59, tzinfo=MOSCOW)
    windows: list[tuple[Any, Any]] = [
        (date(2020, 5, 1), date(2020, 5, 1)),
        ("2020-05-01", "2020-05-01"),
        (start, end),
        (start.astimezone(UTC), end.astimezone(UTC)),
        (datetime(2020, 5, 1), datetime(2020, 5, 1, 23, 59, 59)),  # naive: service zone
        (int(start.timestamp()), str(int(end.timestamp()))),
        ("2020-05-01 00:00:00", "2020-05-01T23:59:59+03:00"),
    ]
    with client_of(http, key) as client:
        for window in windows:
            assert ids(list(client.iter_calls(*window))) == [f"{10**18}", f"{10**18 + 1}"], window


def test_time_segments_keep_dates_and_turn_datetimes_into_timestamps() -> None:
    assert time_segment(date(2020, 5, 1), MOSCOW) == "2020-05-01"
    assert time_segment(datetime(2020, 5, 1, 3, 0), MOSCOW) == "1588291200"
    assert time_segment(datetime(2020, 5, 1, 0, 0, tzinfo=UTC), MOSCOW) == "1588291200"
    assert time_segment("2020-05-01T00:00:00Z", MOSCOW) == "1588291200"
    assert time_segment(" 1588291200 ", MOSCOW) == "1588291200"
    # Wrong types too, on purpose (Any): callers without a type checker may pass them.
    wrong: tuple[Any, ...] = ("yesterday", "01.05.2020", -1, True, 1.5)
    for bad in wrong:
        with pytest.raises((ValueError, TypeError)):
            time_segment(bad, MOSCOW)


def test_the_endpoint_is_found_from_the_server_url() -> None:
    assert api_endpoint("https://calls.example.com") == "https://calls.example.com/api/"
    assert api_endpoint("http://h:8080/") == "http://h:8080/api/"
    assert api_endpoint("http://h/api") == "http://h/api/"
    assert api_endpoint("http://h/api/index.php") == "http://h/api/index.php"
    assert api_endpoint("http://h/tools/") == "http://h/tools/api/"
    with pytest.raises(ValueError, match="http"):
        api_endpoint("ftp://h")


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Callable[[str], tuple[TestClient, Store]]]:
    """Apps over their own SQLite databases, in pages of 4."""
    opened: list[tuple[TestClient, Store]] = []

    def make(name: str) -> tuple[TestClient, Store]:
        url = f"sqlite:///{tmp_path / name}.db"
        store = open_store(Settings.from_env(env={}, database_url=url, page_size=4))
        http = TestClient(create_app(store.settings, store))
        http.__enter__()
        opened.append((http, store))
        return http, store

    yield make
    for http, store in opened:
        http.__exit__(None, None, None)
        store.close()


def test_jsonl_export_imports_into_an_empty_database_and_exports_identically(
    sqlite_app: Callable[[str], tuple[TestClient, Store]], tmp_path: Path
) -> None:
    first_http, first = sqlite_app("first")
    account, key = new_account(first, "a")
    load(first, account, [rich_call(n) for n in range(11)])
    with client_of(first_http, key) as client:
        export_calls(client, tmp_path / "first.jsonl", "2020-05-01", "2020-05-01")
    exported = (tmp_path / "first.jsonl").read_bytes()
    assert exported.count(b"\n") == 11

    second_http, second = sqlite_app("second")
    other, other_key = new_account(second, "b")
    import_bytes(second, other, exported, second.settings.zone)
    with client_of(second_http, other_key) as client:
        export_calls(client, tmp_path / "second.jsonl", "2020-05-01", "2020-05-01")
    assert (tmp_path / "second.jsonl").read_bytes() == exported


def test_request_logs_of_the_http_library_never_show_the_key(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    http, store = make_client()
    _, key = new_account(store, "logged")
    with (
        caplog.at_level(logging.INFO, logger="httpx2"),
        Client("http://testserver", key, transport=http._transport) as client,
    ):
        assert list(client.iter_calls("2020-01-01", "2020-01-02")) == []
    assert "HTTP Request" in caplog.text
    assert key not in caplog.text
