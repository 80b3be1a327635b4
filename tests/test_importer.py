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
from click.testing import CliRunner
from starlette.testclient import TestClient

from calltrack.api.app import create_app
from calltrack.cli import main
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


def test_a_record_without_universal_id_gets_25_digits_derived_from_its_content(
    store: Store,
) -> None:
    account_id, _ = new_account(store, "a")
    records = [record(), record(duration=1), record("", duration=2)]
    assert load(store, account_id, jsonl(records)) == ImportResult(imported=3, updated=0)
    ids = [call["universalId"] for call in dump(store, account_id)]
    assert len(set(ids)) == 3
    assert all(uid.isdigit() and len(uid) == 25 for uid in ids), ids


def test_reimporting_a_file_without_ids_changes_nothing(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    records = [record(callTime=f"2020-05-01 10:00:0{i}", duration=i) for i in range(5)]
    assert load(store, account_id, jsonl(records)) == ImportResult(imported=5, updated=0)
    first = dump(store, account_id)
    # The same calls again, keys in another order, as an array, with pages: the same ids.
    again = b"[" + b",".join(line(dict(reversed(r.items())) | {"page": 3}) for r in records) + b"]"
    assert load(store, account_id, again) == ImportResult(imported=0, updated=5)
    assert dump(store, account_id) == first
    assert store.count_calls(account_id) == 5
    changed = load(store, account_id, jsonl([record(callTime="2020-05-01 10:00:00", duration=9)]))
    assert changed == ImportResult(imported=1, updated=0)  # other content: another call


def test_identical_records_without_ids_in_one_file_are_one_call(store: Store) -> None:
    account_id, _ = new_account(store, "a")
    same = record(duration=7)
    result = load(store, account_id, jsonl([same, record(duration=8), same]))
    assert result == ImportResult(imported=2, updated=0)
    assert sorted(call["duration"] for call in dump(store, account_id)) == [7, 8]


def test_the_same_content_in_two_accounts_is_two_calls(store: Store) -> None:
    a_id, _ = new_account(store, "a")
    b_id, _ = new_account(store, "b")
    load(store, a_id, jsonl([record()]))
    assert load(store, b_id, jsonl([record()])) == ImportResult(imported=1, updated=0)
    assert dump(store, a_id)[0]["universalId"] != dump(store, b_id)[0]["universalId"]


# -- what is refused, and that a refused file changes nothing ---------------------------------

GOOD = line(record("new-1", callTime="2020-05-02 09:00:00"))
UPDATE = line(record("old-1", status="fail"))  # a changed version of a stored call


def bad(**fields: Any) -> bytes:
    return line(record("bad-1", **fields))


HOOK = {
    "hookEventName": "AFTER_CALL_FINISH",
    "hookAddress": "https://crm.example/hook",
    "hookMethod": "POST",
    "hookResponseStatus": 200,
}


def without(key: str) -> bytes:
    fields = record("bad-1")
    del fields[key]
    return line(fields)


INT = "a whole number from 0 to 9223372036854775807"
DATE_TIME = "a date-time `YYYY-MM-DD HH:MM:SS`"
SERVICE_TYPES = 'one of "callback", "calltracking", "import"'
LONG = "x" * 9000

# (bad record, the exact reason): the record is line 4 of a JSON Lines file, index 2 of an array.
REJECTIONS: dict[str, tuple[bytes, str]] = {
    "int-given-as-string": (bad(duration="5"), f'`duration` is "5", expected {INT}'),
    "negative-int": (bad(duration=-1), f"`duration` is -1, expected {INT}"),
    "int-past-64-bits": (bad(ctCallId=2**64), f"`ctCallId` is {2**64}, expected {INT}"),
    "bool-given-as-1": (bad(unique=1), "`unique` is 1, expected true or false"),
    "id-given-as-number": (
        bad(universalId=7),
        "`universalId` is 7, expected a string of at most 64 characters",
    ),
    "digits": (
        bad(clientNumber="+7 900"),
        '`clientNumber` is "+7 900", expected a string of digits (at most 32)',
    ),
    "offset": (
        bad(timezoneOffset="3"),
        '`timezoneOffset` is "3", expected a UTC offset `+HHMM` or `-HHMM`, or empty',
    ),
    "text-too-long": (
        bad(site=LONG),
        f'`site` is "{"x" * 49}…xxxxxxx" (9,000 characters), '
        "expected a string of at most 8192 characters",
    ),
    "enum": (bad(serviceType="sms"), f'`serviceType` is "sms", expected {SERVICE_TYPES}'),
    "enum-with-empty": (
        bad(serviceType="callback", cbConnectType="x"),
        '`cbConnectType` is "x", expected one of "", "auto", "dtmf", "smartcall"',
    ),
    "list-given-as-string": (
        bad(tags="hot"),
        '`tags` is "hot", expected a list of at most 1000 items, '
        "each a string of at most 8192 characters",
    ),
    "negative-int-in-list": (
        bad(cbAttemptsQueue=[1, -2]),
        f"`cbAttemptsQueue[1]` is -2, expected {INT}",
    ),
    "hook-enum": (
        bad(hooks=[HOOK | {"hookMethod": "PATCH"}]),
        '`hooks[0].hookMethod` is "PATCH", expected one of "DELETE", "GET", "POST", "PUT"',
    ),
    "hook-missing-key": (
        bad(hooks=[HOOK, {k: v for k, v in HOOK.items() if k != "hookAddress"}]),
        "`hooks[1].hookAddress` is missing, expected a string of at most 8192 characters",
    ),
    "hook-unknown-key": (
        bad(hooks=[HOOK | {"hookColour": "red"}]),
        'unknown field `hooks[0].hookColour` (value "red"), expected only the fields of an '
        "object with `hookEventName`, `hookAddress`, `hookMethod`, `hookResponseStatus`",
    ),
    "date-shape": (
        bad(callTime="2020-05-01T10:00:00"),
        f'`callTime` is "2020-05-01T10:00:00", expected {DATE_TIME}',
    ),
    "date-impossible": (
        bad(callTime="2020-13-01 00:00:00"),
        f'`callTime` is "2020-13-01 00:00:00", expected {DATE_TIME} '
        "(there is no such date or time)",
    ),
    "optional-date": (
        bad(localDate="today"),
        f'`localDate` is "today", expected {DATE_TIME} or empty',
    ),
    "empty-callTime": (bad(callTime=""), f"`callTime` is missing or empty, expected {DATE_TIME}"),
    "missing-callTime": (
        without("callTime"),
        f"`callTime` is missing or empty, expected {DATE_TIME}",
    ),
    "empty-serviceType": (bad(serviceType=""), f"`serviceType` is empty, expected {SERVICE_TYPES}"),
    "missing-serviceType": (
        without("serviceType"),
        f"`serviceType` is missing, expected {SERVICE_TYPES}",
    ),
    "missing-status": (without("status"), '`status` is missing, expected one of "fail", "success"'),
    "unknown-key": (
        bad(colour="red"),
        'unknown field `colour` (value "red"), expected only the fields of a v3 call record',
    ),
    "differing-site-visit": (
        bad(visitSite="a.ru", siteVisit="b.ru"),
        '`visitSite` is "a.ru" and `siteVisit` is "b.ru", expected the same value '
        "(they are one field)",
    ),
    "not-an-object": (b"[1, 2]", "the record is [1,2], expected a JSON object"),
    "repeated-universalId": (
        line(record("new-1", duration=3)),
        '`universalId` "new-1" repeats {first}',
    ),
}
# JSON that does not parse cannot be an element of an array: these are JSON Lines only.
SYNTAX_REJECTIONS: dict[str, tuple[bytes, str]] = {
    "truncated-last-line": (bad()[:-5], "not valid JSON: Input data was truncated"),
    "not-json-at-all": (
        b"this is not JSON",
        "not valid JSON: JSON is malformed: invalid character (byte 4)",
    ),
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


JSON_LINES = {**REJECTIONS, **SYNTAX_REJECTIONS}


@pytest.mark.parametrize(("bad_line", "reason"), JSON_LINES.values(), ids=JSON_LINES.keys())
def test_a_bad_line_is_rejected_naming_line_field_value_and_expectation(
    populated: tuple[Store, int, int], bad_line: bytes, reason: str
) -> None:
    store, a_id, b_id = populated
    before = snapshot(store, a_id, b_id)
    error = reject(store, a_id, b"\n".join([GOOD, b"", UPDATE, bad_line]) + b"\n")
    assert str(error) == "line 4: " + reason.format(first="line 1")
    assert (error.line, error.index) == (4, None)
    assert snapshot(store, a_id, b_id) == before


@pytest.mark.parametrize(("bad_line", "reason"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_a_bad_record_of_an_array_is_named_by_its_index(
    populated: tuple[Store, int, int], bad_line: bytes, reason: str
) -> None:
    store, a_id, b_id = populated
    before = snapshot(store, a_id, b_id)
    error = reject(store, a_id, b"[" + b", ".join([GOOD, UPDATE, bad_line]) + b"]")
    assert str(error) == "record 3 (index 2): " + reason.format(first="record 1 (index 0)")
    assert (error.line, error.index) == (1, 2)
    assert snapshot(store, a_id, b_id) == before


def bodies(bad_line: bytes, reason: str) -> dict[str, tuple[bytes, str, dict[str, int]]]:
    """The bad record in each shape: (body, the message's start, where ``call/put`` puts it)."""
    return {
        "jsonl": (
            b"\n".join([GOOD, b"", UPDATE, bad_line]),
            "line 4: " + reason.format(first="line 1"),
            {"line": 4},
        ),
        "array": (
            b"[" + b", ".join([GOOD, UPDATE, bad_line]) + b"]",
            "record 3 (index 2): " + reason.format(first="record 1 (index 0)"),
            {"line": 1, "index": 2},
        ),
    }


@pytest.mark.parametrize("shape", ["jsonl", "array"])
@pytest.mark.parametrize(("bad_line", "reason"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_calltrack_import_prints_the_same_message_and_imports_nothing(
    tmp_path: Path, bad_line: bytes, reason: str, shape: str
) -> None:
    database = f"sqlite:///{tmp_path / 'x.db'}"
    store = open_store(Settings.from_env(env={}, database_url=database))
    new_account(store, "a")
    body, message, _ = bodies(bad_line, reason)[shape]
    (tmp_path / "calls.json").write_bytes(body)
    args = ["--database", database, "import", str(tmp_path / "calls.json"), "--account", "a"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: {message}\n"
    try:
        assert store.count_calls() == 0
    finally:
        store.close()


@pytest.mark.parametrize("shape", ["jsonl", "array"])
@pytest.mark.parametrize(("bad_line", "reason"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_call_put_answers_the_record_and_the_same_reason(
    client: tuple[TestClient, Store], bad_line: bytes, reason: str, shape: str
) -> None:
    http, store = client
    owner, key = new_account(store, "a")
    body, message, where = bodies(bad_line, reason)[shape]
    answer = http.post(f"/api/?json/v3/{key}/call/put", content=body).json()
    expected = {"error": "Call data is not valid", **where, "reason": message.split(": ", 1)[1]}
    assert answer["inbound"] == expected
    assert dump(store, owner) == []


def test_the_record_of_a_multi_line_array_keeps_the_line_it_starts_on(
    populated: tuple[Store, int, int],
) -> None:
    store, a_id, _ = populated
    data = b"[\n" + b",\n".join([GOOD, UPDATE, b'{"serviceType": "sms"}']) + b"\n]\n"
    error = reject(store, a_id, data)
    assert (error.line, error.index) == (4, 2)
    assert str(error).startswith('record 3 (index 2): `serviceType` is "sms"')


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


def test_a_universal_id_of_another_account_is_rejected_and_changes_nothing(
    populated: tuple[Store, int, int],
) -> None:
    store, a_id, b_id = populated
    before = snapshot(store, a_id, b_id)
    error = reject(store, a_id, b"\n".join([GOOD, UPDATE, line(record("b-1"))]))
    assert str(error) == "line 3: universalId 'b-1' belongs to another account"
    in_array = reject(store, a_id, b"[" + b",".join([GOOD, UPDATE, line(record("b-1"))]) + b"]")
    assert str(in_array) == "record 3 (index 2): universalId 'b-1' belongs to another account"
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
    for number, (first, second) in enumerate(zip(exported, again, strict=True)):
        assert first == second, f"page {number} differs"
