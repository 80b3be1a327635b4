"""The import format (API.md section 6) on both backends: what loads, what is refused, and how."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from calltrack.api.app import create_app
from calltrack.config import Settings
from calltrack.demo_data import generate_calls
from calltrack.errors import ImportRejected
from calltrack.importer import import_bytes
from calltrack.store import ImportResult, Store, open_store
from tests.conftest import DEFAULT_POSTGRES, new_account
from tests.helpers_calls import dump, jsonl, record, seed

StoreFactory = Callable[..., Store]

# Section 5 of API.md, in order; every other key is a string whose empty value is "".
CONTRACT_KEYS = (
    "page", "universalId", "serviceType", "clientNumber", "managerNumber", "callerIdToManager",
    "callerIdToClient", "statusFirst", "statusSecond", "status", "callTime", "localDate",
    "timezoneOffset", "duration", "tariffTime", "site", "recordUrl", "unique", "target",
    "uniqueTarget", "visitSite", "siteVisit", "referrer", "utm_source", "utm_medium",
    "utm_campaign", "utm_content", "utm_term", "yaClid", "gaClid", "roistatClid",
    "calltouchClid", "comagicClid", "city", "region", "country", "ipAddress", "pagesCount",
    "entryPoint", "entryPointQuery", "callPage", "counts", "userAgent", "device", "cbWidgetHash",
    "cbToolId", "cbCallId", "cbUid", "cbToolName", "cbOfficeNumber", "cbOfficeName",
    "cbOrderDate", "cbAttempt", "cbAttemptsQueue", "cbConnectType", "cbSmartCallCount",
    "cbIvrCount", "cbEventSource", "ctCallId", "ctCampaignId", "ctCampaignName", "ctIsListened",
    "tags", "hooks",
)  # fmt: skip
INT_KEYS = frozenset(
    {
        "page", "statusFirst", "statusSecond", "duration", "tariffTime", "pagesCount", "counts",
        "cbToolId", "cbCallId", "cbUid", "cbAttempt", "cbSmartCallCount", "cbIvrCount",
        "ctCallId", "ctCampaignId",
    }
)  # fmt: skip
BOOL_KEYS = frozenset({"unique", "target", "uniqueTarget"})
LIST_KEYS = frozenset({"cbAttemptsQueue", "tags", "hooks"})


def empty_value(key: str) -> object:
    if key in INT_KEYS:
        return 0
    if key in BOOL_KEYS:
        return False
    if key in LIST_KEYS:
        return []
    return ""


def load(store: Store, account_id: int, data: bytes) -> ImportResult:
    return import_bytes(store, account_id, data, store.settings.zone)


def line(fields: dict[str, Any]) -> bytes:
    return msgspec.json.encode(fields)


# -- what loads ------------------------------------------------------------------------------


def test_json_lines_import(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    result = load(store, account_id, jsonl([record("1"), record("2"), record("3")]))
    assert result == ImportResult(imported=3, updated=0)
    assert [call["universalId"] for call in dump(store, account_id)] == ["1", "2", "3"]


def test_a_json_array_imports_like_json_lines(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    array = b"[\n" + b",\n".join(line(record(uid)) for uid in ("1", "2")) + b"\n]\n"
    assert load(store, account_id, array) == ImportResult(imported=2, updated=0)
    assert [call["universalId"] for call in dump(store, account_id)] == ["1", "2"]


def test_blank_lines_are_allowed_anywhere(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    data = b"\n\n" + line(record("1")) + b"\n   \n\t\n" + line(record("2")) + b"\n\n"
    assert load(store, account_id, data) == ImportResult(imported=2, updated=0)


@pytest.mark.parametrize("shape", ["json-lines", "json-array"])
def test_a_utf8_byte_order_mark_is_accepted(store: Store, shape: str) -> None:
    account_id, _ = new_account(store, "a")
    records = [record("1", city="Москва"), record("2")]
    body = jsonl(records) if shape == "json-lines" else msgspec.json.encode(records)
    assert load(store, account_id, b"\xef\xbb\xbf" + body) == ImportResult(2, 0)
    assert dump(store, account_id)[0]["city"] == "Москва"


def test_page_is_ignored(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    load(store, account_id, jsonl([record("1", page=7)]))
    assert dump(store, account_id)[0]["page"] == 0


def test_missing_keys_take_their_empty_values_in_contract_order(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    load(store, account_id, jsonl([record("1")]))
    [call] = dump(store, account_id)
    assert list(call) == list(CONTRACT_KEYS)
    given = {"universalId": "1", **record()}
    assert call == {key: given.get(key, empty_value(key)) for key in CONTRACT_KEYS}


@pytest.mark.parametrize("given", ["siteVisit", "visitSite"])
def test_either_site_visit_name_alone_fills_both(store: Store, given: str) -> None:
    account_id, _ = new_account(store, "a")
    load(store, account_id, jsonl([record("1", **{given: "shop.example"})]))
    [call] = dump(store, account_id)
    assert (call["visitSite"], call["siteVisit"]) == ("shop.example", "shop.example")


def test_equal_site_visit_values_under_both_names_are_accepted(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    load(store, account_id, jsonl([record("1", visitSite="x.ru", siteVisit="x.ru")]))
    assert dump(store, account_id)[0]["siteVisit"] == "x.ru"


def test_a_record_without_universal_id_gets_a_fresh_digit_id(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    result = load(store, account_id, jsonl([record(), record(), record("")]))
    assert result == ImportResult(imported=3, updated=0)
    ids = [call["universalId"] for call in dump(store, account_id)]
    assert len(set(ids)) == 3
    assert all(uid.isdigit() and len(uid) >= 10 for uid in ids), ids


# -- what is refused, and that a refused file changes nothing ---------------------------------

GOOD = line(record("new-1", callTime="2020-05-02 09:00:00"))
UPDATE = line(record("old-1", status="fail"))  # a changed version of a stored call


def bad(**fields: Any) -> bytes:
    return line(record("bad-1", **fields))


def without(key: str) -> bytes:
    fields = record("bad-1")
    del fields[key]
    return line(fields)


# (bad line, words the reason must contain); the bad line is line 4 of a JSON Lines file.
REJECTIONS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "string-duration": (bad(duration="5"), ("duration",)),
    "bool-given-as-1": (bad(unique=1), ("unique",)),
    "serviceType-sms": (bad(serviceType="sms"), ("serviceType", "sms")),
    "cbConnectType-x": (bad(serviceType="callback", cbConnectType="x"), ("cbConnectType",)),
    "month-13": (bad(callTime="2020-13-01 00:00:00"), ("callTime",)),
    "iso-T-separator": (bad(callTime="2020-05-01T10:00:00"), ("callTime",)),
    "missing-callTime": (without("callTime"), ("callTime",)),
    "missing-serviceType": (without("serviceType"), ("serviceType",)),
    "missing-status": (without("status"), ("status",)),
    "unknown-key": (bad(colour="red"), ("colour",)),
    "negative-int": (bad(duration=-1), ("duration",)),
    "negative-int-in-list": (bad(cbAttemptsQueue=[1, -2]), ("cbAttemptsQueue",)),
    "differing-site-visit": (bad(visitSite="a.ru", siteVisit="b.ru"), ("visitSite", "siteVisit")),
    "truncated-last-line": (bad()[:-5], ("truncated",)),
    "not-json-at-all": (b"this is not JSON", ("JSON",)),
}


@pytest.fixture
def populated(store: Store) -> tuple[Store, int, int]:
    """Account a with calls old-1 and old-2, account b with call b-1."""
    a_id, _ = new_account(store, "a")
    b_id, _ = new_account(store, "b")
    seed(store, a_id, "old-1", "old-2")
    seed(store, b_id, "b-1")
    return store, a_id, b_id


def snapshot(store: Store, *account_ids: int) -> tuple[int, list[list[dict[str, Any]]]]:
    return store.count_calls(), [dump(store, account_id) for account_id in account_ids]


def reject(store: Store, account_id: int, data: bytes) -> ImportRejected:
    with pytest.raises(ImportRejected) as caught:
        load(store, account_id, data)
    return caught.value


@pytest.mark.parametrize(("bad_line", "words"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_a_bad_record_is_rejected_with_its_line_and_reason_and_changes_nothing(
    populated: tuple[Store, int, int], bad_line: bytes, words: tuple[str, ...]
) -> None:
    store, a_id, b_id = populated
    before = snapshot(store, a_id, b_id)
    error = reject(store, a_id, b"\n".join([GOOD, b"", UPDATE, bad_line]) + b"\n")
    assert error.line == 4
    assert str(error).startswith("line 4: ")
    for word in words:
        assert word in error.reason
    assert snapshot(store, a_id, b_id) == before


def test_a_bad_record_of_a_json_array_is_rejected_with_its_line(
    populated: tuple[Store, int, int],
) -> None:
    store, a_id, b_id = populated
    before = snapshot(store, a_id, b_id)
    data = b"[\n" + b",\n".join([GOOD, UPDATE, bad(serviceType="sms")]) + b"\n]\n"
    error = reject(store, a_id, data)
    assert (error.line, "serviceType" in error.reason) == (4, True)
    assert snapshot(store, a_id, b_id) == before


def test_a_json_syntax_error_inside_an_array_names_its_line(
    populated: tuple[Store, int, int],
) -> None:
    store, a_id, b_id = populated
    before = snapshot(store, a_id, b_id)
    data = b"[\n" + b",\n".join([GOOD, UPDATE, b'{"universalId" "x"}', GOOD]) + b"\n]\n"
    error = reject(store, a_id, data)
    assert snapshot(store, a_id, b_id) == before
    assert error.line == 4


def test_a_truncated_json_array_names_its_last_line(populated: tuple[Store, int, int]) -> None:
    store, a_id, b_id = populated
    before = snapshot(store, a_id, b_id)
    data = b"[\n" + b",\n".join([GOOD, UPDATE, bad()[:-5]])
    error = reject(store, a_id, data)
    assert snapshot(store, a_id, b_id) == before
    assert error.line == 4


def test_a_universal_id_repeated_within_one_file_is_rejected_naming_both_lines(
    populated: tuple[Store, int, int],
) -> None:
    store, a_id, b_id = populated
    before = snapshot(store, a_id, b_id)
    error = reject(store, a_id, b"\n".join([GOOD, UPDATE, b"", GOOD]))
    assert error.line == 4
    assert "line 1" in error.reason
    assert "new-1" in error.reason
    assert snapshot(store, a_id, b_id) == before


def test_a_universal_id_of_another_account_is_rejected_and_changes_nothing(
    populated: tuple[Store, int, int],
) -> None:
    store, a_id, b_id = populated
    before = snapshot(store, a_id, b_id)
    error = reject(store, a_id, b"\n".join([GOOD, UPDATE, line(record("b-1"))]))
    assert error.line == 3
    assert "b-1" in error.reason
    assert "another account" in error.reason
    assert snapshot(store, a_id, b_id) == before


def test_a_rejection_after_thousands_of_good_records_still_changes_nothing(
    populated: tuple[Store, int, int],
) -> None:
    # More records than one store batch (2000), so earlier batches were already written.
    store, a_id, b_id = populated
    before = snapshot(store, a_id, b_id)
    good = [line(record(f"n{i}")) for i in range(2500)]
    error = reject(store, a_id, b"\n".join([*good, bad(serviceType="sms")]))
    assert error.line == 2501
    assert snapshot(store, a_id, b_id) == before


# -- identity: universalId -------------------------------------------------------------------


def test_importing_the_same_file_twice_updates_instead_of_duplicating(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    data = jsonl([record(str(i), callTime=f"2020-05-01 10:00:0{i}") for i in range(5)])
    assert load(store, account_id, data) == ImportResult(imported=5, updated=0)
    first = dump(store, account_id)
    assert load(store, account_id, data) == ImportResult(imported=0, updated=5)
    assert dump(store, account_id) == first
    assert store.count_calls() == 5


def test_a_changed_record_is_updated_in_place(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    load(store, account_id, jsonl([record("1"), record("2", callTime="2020-05-01 11:00:00")]))
    changed = record("1", status="fail", duration=42, callTime="2020-05-01 12:00:00")
    assert load(store, account_id, jsonl([changed])) == ImportResult(imported=0, updated=1)
    calls = dump(store, account_id)
    assert [call["universalId"] for call in calls] == ["2", "1"]  # moved to its new time
    assert (calls[1]["status"], calls[1]["duration"]) == ("fail", 42)
    assert store.count_calls(account_id) == 2


# -- round trip: export, import into an empty database, export again -------------------------


@pytest.fixture
def empty_store(backend: str, tmp_path: Path) -> Iterator[Store]:
    """A store on a second, empty database of the test's backend (page size 100)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'other.db'}"
        store = open_store(Settings.from_env(env={}, database_url=url, page_size=100))
        yield store
        store.close()
        return
    import psycopg

    admin_url = os.environ.get("CALLTRACK_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    name = f"calltrack_roundtrip_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    store = open_store(Settings.from_env(env={}, database_url=url, page_size=100))
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


ROUND_TRIP_WINDOW = "2024-02-01/2024-06-02"


def export_pages(http: TestClient, key: str) -> list[bytes]:
    """Every page of the window, as raw bytes, until the API says the page is past the end."""
    pages: list[bytes] = []
    for page in range(100):  # loop guard
        answer = http.get(f"/api/?json/v3/{key}/call/get/{page}/{ROUND_TRIP_WINDOW}")
        assert answer.status_code == 200
        if answer.content.startswith(b"{"):
            assert answer.json()["inbound"]["error"] == "Incorrect page is set"
            return pages
        pages.append(answer.content)
    raise AssertionError("the export never ended")


def test_export_import_into_an_empty_database_and_export_again_gives_the_same_bytes(
    make_client: Callable[..., tuple[TestClient, Store]], empty_store: Store
) -> None:
    http, store = make_client(page_size=100)
    account_id, key = new_account(store, "a")
    calls = generate_calls(300, seed=1, id_prefix="9", now=datetime(2024, 6, 1, 12))
    demo = b"\n".join(msgspec.json.encode(call) for call in calls)
    assert load(store, account_id, demo) == ImportResult(imported=300, updated=0)
    exported = export_pages(http, key)
    assert len(exported) == 3
    assert sum(len(msgspec.json.decode(page)) for page in exported) == 300

    other_id, other_key = new_account(empty_store, "b")
    for page in exported:  # each page is a JSON array: the importer reads it as it is
        load(empty_store, other_id, page)
    assert empty_store.count_calls() == 300
    with TestClient(create_app(empty_store.settings, empty_store)) as other_http:
        again = export_pages(other_http, other_key)

    assert len(again) == len(exported)
    for page, (first, second) in enumerate(zip(exported, again, strict=True)):
        assert first == second, f"page {page} differs"
