"""The v3 API through HTTP, in process, on SQLite and PostgreSQL (contract sections 1, 2, 4, 5).

Every error answer is checked against the contract's envelope written out here by hand, key
order included; every window, page and record rule against calls imported for the test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import pytest
from starlette.testclient import TestClient

from calltrack import access
from calltrack.api.app import create_app
from calltrack.config import Settings
from calltrack.importer import import_bytes
from calltrack.model import FIELD_NAMES
from calltrack.store import Store
from tests.conftest import new_account

MakeClient = Callable[..., tuple[TestClient, Store]]
Record = dict[str, Any]

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

FORMAT = "Type to return is not available"
VERSION = "It is wrong API version"
USER = "User is not recognized"
ENTITY = "Entity does not exist"
METHOD = "Method does not exist"
PAGE = "Incorrect page is set"
START = "Start date has wrong type. Possible format is 'Y-m-d' or timestamp"
END = "End date has wrong type. Possible format is 'Y-m-d' or timestamp"
NO_ROWS = "No rows found"
UNAVAILABLE = "Service temporarily unavailable"

# Section 2, copied from the contract rather than imported: the answer must match the text.
# With the whole v3 surface served (docs/api.md), `call` also lists put and delete, and
# `user` getWithRole.
SPEC_INFO: dict[str, Any] = {
    "entities": {
        "call": ["get", "getByRole", "getWithRole", "put", "delete"],
        "callrole": ["get"],
        "phone": ["get"],
        "user": ["get", "getWithRole"],
        "campaign": ["get"],
        "tag": ["get"],
    },
    "types": ["json", "plain", "csv", "xml"],
    "versions": ["v3"],
}

# Section 5, in the contract's order: key -> JSON type.
SPEC_TYPES: dict[str, str] = {
    "page": "int",
    "universalId": "string",
    "serviceType": "string",
    "clientNumber": "string",
    "managerNumber": "string",
    "callerIdToManager": "string",
    "callerIdToClient": "string",
    "statusFirst": "int",
    "statusSecond": "int",
    "status": "string",
    "callTime": "string",
    "localDate": "string",
    "timezoneOffset": "string",
    "duration": "int",
    "tariffTime": "int",
    "site": "string",
    "recordUrl": "string",
    "unique": "bool",
    "target": "bool",
    "uniqueTarget": "bool",
    "visitSite": "string",
    "siteVisit": "string",
    "referrer": "string",
    "utm_source": "string",
    "utm_medium": "string",
    "utm_campaign": "string",
    "utm_content": "string",
    "utm_term": "string",
    "yaClid": "string",
    "gaClid": "string",
    "roistatClid": "string",
    "calltouchClid": "string",
    "comagicClid": "string",
    "city": "string",
    "region": "string",
    "country": "string",
    "ipAddress": "string",
    "pagesCount": "int",
    "entryPoint": "string",
    "entryPointQuery": "string",
    "callPage": "string",
    "counts": "int",
    "userAgent": "string",
    "device": "string",
    "cbWidgetHash": "string",
    "cbToolId": "int",
    "cbCallId": "int",
    "cbUid": "int",
    "cbToolName": "string",
    "cbOfficeNumber": "string",
    "cbOfficeName": "string",
    "cbOrderDate": "string",
    "cbAttempt": "int",
    "cbAttemptsQueue": "array of int",
    "cbConnectType": "string",
    "cbSmartCallCount": "int",
    "cbIvrCount": "int",
    "cbEventSource": "string",
    "ctCallId": "int",
    "ctCampaignId": "int",
    "ctCampaignName": "string",
    "ctIsListened": "string",
    "tags": "array of string",
    "hooks": "array of object",
}
EMPTY: dict[str, Any] = {
    "int": 0,
    "string": "",
    "bool": False,
    "array of int": [],
    "array of string": [],
    "array of object": [],
}
HOOK_KEYS = ["hookEventName", "hookAddress", "hookMethod", "hookResponseStatus"]


class Answer(Protocol):
    """What the tests read of a TestClient response (httpx or httpx2, as starlette picks)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    def json(self, **kwargs: Any) -> Any: ...


# -- helpers ---------------------------------------------------------------------------------


def envelope(message: str) -> dict[str, Any]:
    return {"inbound": {"error": message}, "info": SPEC_INFO, "payload": []}


def ordered(data: bytes | str) -> Any:
    """JSON with every object as its list of (key, value) pairs, so key order is compared too."""
    return json.loads(data, object_pairs_hook=lambda pairs: [tuple(pair) for pair in pairs])


def assert_error(response: Answer, message: str) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON_CONTENT_TYPE
    assert ordered(response.content) == ordered(json.dumps(envelope(message)))


def call(uid: str, call_time: str, **fields: Any) -> Record:
    """A minimal valid call record."""
    return {
        "universalId": uid,
        "serviceType": "calltracking",
        "status": "success",
        "callTime": call_time,
        **fields,
    }


def load(store: Store, account_id: int, records: Sequence[Record]) -> None:
    data = b"\n".join(json.dumps(record, ensure_ascii=False).encode() for record in records)
    import_bytes(store, account_id, data, store.settings.zone)


def api(http: TestClient, query: str) -> Answer:
    return http.get("/api/?" + query)


def calls_of(response: Answer) -> list[Record]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON_CONTENT_TYPE
    body = response.json()
    assert isinstance(body, list), body
    return body


def ids(response: Answer) -> list[str]:
    return [record["universalId"] for record in calls_of(response)]


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """Unix seconds of a UTC wall-clock time (expected values, computed without the zone)."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


def walk(
    http: TestClient, query_of_page: Callable[[int], str], guard: int = 50, start: int = 0
) -> list[list[str]]:
    """The ids of every page from ``start`` until "Incorrect page is set", each page checked."""
    pages: list[list[str]] = []
    for page in range(start, guard):
        response = api(http, query_of_page(page))
        body = response.json()
        if isinstance(body, dict):
            assert page > 0, body
            assert_error(response, PAGE)
            return pages
        assert [record["page"] for record in body] == [page] * len(body)
        pages.append([record["universalId"] for record in body])
    pytest.fail(f"the walk did not end within {guard} pages")


@dataclass(frozen=True)
class World:
    """Alice owns one call; Bob owns one and granted Alice a role over his calls."""

    http: TestClient
    store: Store
    alice_id: int
    user_key: str  # Alice's user key
    role_key: str  # Alice's role key for Bob's role
    unknown_key: str  # well-formed, never issued


@pytest.fixture
def world(client: tuple[TestClient, Store]) -> World:
    http, store = client
    alice_id, user_key = new_account(store, "alice")
    bob_id, _ = new_account(store, "bob")
    role = store.create_role(bob_id, "viewer")
    grant = store.create_grant(role.id, alice_id)
    role_key = access.issue_role_key(store, grant)
    load(store, alice_id, [call("alice-1", "2020-05-01 10:00:00")])
    load(store, bob_id, [call("bob-1", "2020-05-01 11:00:00")])
    unknown = "0" * 16
    assert unknown not in {user_key, role_key}
    return World(http, store, alice_id, user_key, role_key, unknown)


# -- the error table -------------------------------------------------------------------------

# (id, query with {user}, {role}, {unknown}, {upper}, {short}, {long} for keys, message)
ERROR_CASES: list[tuple[str, str, str]] = [
    ("1_empty_query", "", FORMAT),
    ("1_format_missing", "/v3/{user}/call/get/0/2020-05-01", FORMAT),
    ("1_format_yaml_not_served", "yaml/v3/{user}/call/get/0/2020-05-01", FORMAT),
    ("1_format_html_not_served", "html/v3/{user}/call/get/0/2020-05-01", FORMAT),
    ("1_format_uppercase_not_served", "CSV/v3/{user}/call/get/0/2020-05-01", FORMAT),
    ("1_format_unknown", "yaml/v3/{user}/call/get/0/2020-05-01", FORMAT),
    ("2_version_missing", "json//{user}/call/get/0/2020-05-01", VERSION),
    ("2_version_missing_at_end", "json", VERSION),
    ("2_version_v2", "json/v2/{user}/call/get/0/2020-05-01", VERSION),
    ("3_key_missing", "json/v3//call/get/0/2020-05-01", USER),
    ("3_key_missing_at_end", "json/v3", USER),
    ("3_key_malformed_uppercase", "json/v3/{upper}/call/get/0/2020-05-01", USER),
    ("3_key_malformed_too_short", "json/v3/{short}/call/get/0/2020-05-01", USER),
    ("3_key_malformed_too_long", "json/v3/{long}/call/get/0/2020-05-01", USER),
    ("3_key_malformed_symbols", "json/v3/abcd-efgh_ijkl.m/call/get/0/2020-05-01", USER),
    ("3_key_unknown", "json/v3/{unknown}/call/get/0/2020-05-01", USER),
    ("4_entity_missing", "json/v3/{user}//get/0/2020-05-01", ENTITY),
    ("4_entity_missing_at_end", "json/v3/{user}", ENTITY),
    ("4_entity_unknown", "json/v3/{user}/calls/get/0/2020-05-01", ENTITY),
    ("5_method_missing", "json/v3/{user}/call//0/2020-05-01", METHOD),
    ("5_method_missing_at_end", "json/v3/{user}/call", METHOD),
    ("5_method_unknown", "json/v3/{user}/call/post/0/2020-05-01", METHOD),
    ("6_role_key_with_get", "json/v3/{role}/call/get/0/2020-05-01", USER),
    ("6_role_key_with_getWithRole", "json/v3/{role}/call/getWithRole/0/2020-05-01", USER),
    ("6_user_key_with_getByRole", "json/v3/{user}/call/getByRole/0/2020-05-01", USER),
    ("7_page_missing", "json/v3/{user}/call/get", PAGE),
    ("7_page_not_decimal", "json/v3/{user}/call/get/x/2020-05-01", PAGE),
    ("7_page_negative", "json/v3/{user}/call/get/-1/2020-05-01", PAGE),
    ("7_page_10_digits", "json/v3/{user}/call/get/0000000000/2020-05-01", PAGE),
    ("8_from_missing", "json/v3/{user}/call/get/0", START),
    ("8_from_impossible_date", "json/v3/{user}/call/get/0/2020-02-30", START),
    ("8_from_neither_format", "json/v3/{user}/call/get/0/yesterday", START),
    ("9_to_impossible_date", "json/v3/{user}/call/get/0/2020-05-01/2021-02-29", END),
    ("9_to_neither_format", "json/v3/{user}/call/get/0/2020-05-01/tomorrow", END),
    ("10_no_call_in_the_window", "json/v3/{user}/call/get/0/2019-01-01/2019-01-02", NO_ROWS),
    ("10_from_after_to", "json/v3/{user}/call/get/0/2020-05-02/2020-05-01", NO_ROWS),
    ("10_from_after_to_by_one_second", "json/v3/{user}/call/get/0/1588320001/1588320000", NO_ROWS),
    ("11_page_past_the_last", "json/v3/{user}/call/get/1/2020-05-01/2020-05-01", PAGE),
    ("11_largest_page", "json/v3/{user}/call/get/999999999/2020-05-01", PAGE),
    ("11_page_1_of_an_empty_window", "json/v3/{user}/call/get/1/2019-01-01/2019-01-02", PAGE),
    ("11_page_1_of_getByRole", "json/v3/{role}/call/getByRole/1/2020-05-01/2020-05-01", PAGE),
    # the order of the checks
    ("order_format_before_version", "yaml/v2/{user}/call/get/0/2020-05-01", FORMAT),
    ("order_format_before_unknown_key", "yaml/v3/{unknown}/call/get/0/2020-05-01", FORMAT),
    ("order_version_before_unknown_key", "json/v2/{unknown}/call/get/0/2020-05-01", VERSION),
    ("order_unknown_key_before_bad_entity", "json/v3/{unknown}/calls/get/0/2020-05-01", USER),
    ("order_unknown_key_before_bad_method", "json/v3/{unknown}/call/post/0/2020-05-01", USER),
    ("order_malformed_key_before_bad_page", "json/v3/{short}/call/get/x/2020-05-01", USER),
    ("order_unknown_key_before_no_rows", "json/v3/{unknown}/call/get/0/2019-01-01", USER),
    ("order_bad_entity_with_role_key", "json/v3/{role}/calls/get/0/2020-05-01", ENTITY),
    ("order_bad_method_with_role_key", "json/v3/{role}/call/post/0/2020-05-01", METHOD),
    ("order_wrong_kind_before_bad_page", "json/v3/{role}/call/get/x/2020-05-01", USER),
    ("order_wrong_kind_before_bad_from", "json/v3/{user}/call/getByRole/0/2020-02-30", USER),
    ("order_wrong_kind_before_no_rows", "json/v3/{role}/call/get/0/2019-01-01", USER),
    ("order_bad_page_before_bad_from", "json/v3/{user}/call/get/x/2020-02-30", PAGE),
    ("order_bad_from_before_bad_to", "json/v3/{user}/call/get/0/2020-02-30/nope", START),
    ("order_bad_to_before_no_rows", "json/v3/{user}/call/get/0/2019-01-01/nope", END),
]


def fill(template: str, world: World) -> str:
    return template.format(
        user=world.user_key,
        role=world.role_key,
        unknown=world.unknown_key,
        upper=world.user_key.upper(),
        short=world.user_key[:15],
        long=world.user_key + "a",
    )


ERROR_GROUPS = {
    "1": "row_1_format",
    "2": "row_2_version",
    "3": "row_3_key",
    "4": "row_4_entity",
    "5": "row_5_method",
    "6": "row_6_key_of_the_wrong_kind",
    "7": "row_7_page",
    "8": "row_8_from",
    "9": "row_9_to",
    "10": "row_10_no_rows",
    "11": "row_11_page_past_the_last",
    "order": "order_of_the_checks",
}


def group_of(name: str) -> str:
    return name.split("_", 1)[0]


def answer_of(response: Answer) -> tuple[int, str | None, Any]:
    return response.status_code, response.headers.get("content-type"), ordered(response.content)


@pytest.mark.parametrize(
    "group", [pytest.param(group, id=label) for group, label in ERROR_GROUPS.items()]
)
def test_each_error_answers_the_exact_envelope(world: World, group: str) -> None:
    cases = [case for case in ERROR_CASES if group_of(case[0]) == group]
    assert cases
    answers = {
        name: answer_of(api(world.http, fill(template, world))) for name, template, _ in cases
    }
    expected = {
        name: (200, JSON_CONTENT_TYPE, ordered(json.dumps(envelope(message))))
        for name, _, message in cases
    }
    assert answers == expected


def test_every_error_path_answers_the_same_info_and_an_empty_payload(world: World) -> None:
    infos: list[Any] = []
    for _name, template, message in ERROR_CASES:
        response = api(world.http, fill(template, world))
        assert response.status_code == 200
        assert response.headers["content-type"] == JSON_CONTENT_TYPE
        body = response.json()
        assert list(body) == ["inbound", "info", "payload"]
        assert body["inbound"] == {"error": message}
        assert body["payload"] == []
        infos.append(ordered(json.dumps(body["info"])))
    assert len(infos) == len(ERROR_CASES)
    assert all(info == infos[0] for info in infos)  # the same in every error answer
    assert infos[0] == ordered(json.dumps(SPEC_INFO))


def test_the_error_cases_cover_every_documented_message() -> None:
    messages = {message for _name, _template, message in ERROR_CASES}
    assert messages == {FORMAT, VERSION, USER, ENTITY, METHOD, PAGE, START, END, NO_ROWS}
    assert {group_of(name) for name, _template, _message in ERROR_CASES} == set(ERROR_GROUPS)
    assert len({name for name, _template, _message in ERROR_CASES}) == len(ERROR_CASES)


def test_the_requests_behind_the_error_cases_succeed_when_corrected(world: World) -> None:
    """The error cases fail for the reason named, not because the fixture is broken."""
    assert ids(api(world.http, fill("json/v3/{user}/call/get/0/2020-05-01", world))) == ["alice-1"]
    by_role = fill("json/v3/{role}/call/getByRole/0/2020-05-01/2020-05-01", world)
    assert ids(api(world.http, by_role)) == ["bob-1"]
    with_role = fill("json/v3/{user}/call/getWithRole/0/2020-05-01", world)
    assert ids(api(world.http, with_role)) == ["alice-1", "bob-1"]


def test_a_revoked_user_key_is_not_recognized(world: World) -> None:
    query = f"json/v3/{world.user_key}/call/get/0/2020-05-01"
    assert ids(api(world.http, query)) == ["alice-1"]
    (key,) = [k for k in world.store.list_keys(world.alice_id) if k.grant_id is None]
    world.store.revoke_key(key.id)
    assert_error(api(world.http, query), USER)


def test_a_revoked_key_fails_before_any_later_check(world: World) -> None:
    (key,) = [k for k in world.store.list_keys(world.alice_id) if k.grant_id is None]
    world.store.revoke_key(key.id)
    assert_error(api(world.http, f"json/v3/{world.user_key}/calls/get/x/nope"), USER)


def test_a_revoked_role_key_is_not_recognized(world: World) -> None:
    query = f"json/v3/{world.role_key}/call/getByRole/0/2020-05-01"
    assert ids(api(world.http, query)) == ["bob-1"]
    (key,) = [k for k in world.store.list_keys(world.alice_id) if k.grant_id is not None]
    world.store.revoke_key(key.id)
    assert_error(api(world.http, query), USER)


def test_an_account_without_calls_gets_no_rows_found(client: tuple[TestClient, Store]) -> None:
    http, store = client
    _account, key = new_account(store, "empty")
    assert_error(api(http, f"json/v3/{key}/call/get/0/1970-01-01"), NO_ROWS)
    assert_error(api(http, f"json/v3/{key}/call/get/1/1970-01-01"), PAGE)


def test_a_percent_escaped_request_is_decoded_segment_by_segment(world: World) -> None:
    escaped_key = f"%{ord(world.user_key[0]):02X}{world.user_key[1:]}"
    query = f"%6Ason/%763/{escaped_key}/%63all/get/%30/2020%2D05%2D01"
    assert ids(api(world.http, query)) == ["alice-1"]


def test_an_escaped_slash_does_not_split_a_segment(world: World) -> None:
    query = f"json/v3/{world.user_key}/call/get/0/2020-05-01%2F2020-05-02"
    assert_error(api(world.http, query), START)


def test_a_trailing_slash_is_ignored(world: World) -> None:
    plain = api(world.http, f"json/v3/{world.user_key}/call/get/0/2020-05-01/2020-05-01")
    slashed = api(world.http, f"json/v3/{world.user_key}/call/get/0/2020-05-01/2020-05-01/")
    assert ids(plain) == ["alice-1"]
    assert slashed.content == plain.content


# -- the window ------------------------------------------------------------------------------

# Around the 1 May 2020 boundaries, in Moscow time (UTC+3).
EDGE_CALLS = {
    "apr30-last": "2020-04-30 23:59:59",
    "may1-first": "2020-05-01 00:00:00",
    "may1-noon": "2020-05-01 12:00:00",
    "may1-last": "2020-05-01 23:59:59",
    "may2-first": "2020-05-02 00:00:00",
}
MAY1_FIRST = utc(2020, 4, 30, 21, 0, 0)
MAY1_NOON = utc(2020, 5, 1, 9, 0, 0)
MAY1_LAST = utc(2020, 5, 1, 20, 59, 59)
APR30_LAST = MAY1_FIRST - 1
MAY2_FIRST = MAY1_LAST + 1

WINDOW_CASES: list[tuple[str, str, list[str]]] = [
    (
        "date_to_same_date_is_the_whole_day",
        "2020-05-01/2020-05-01",
        ["may1-first", "may1-noon", "may1-last"],
    ),
    ("day_before", "2020-04-30/2020-04-30", ["apr30-last"]),
    ("day_after", "2020-05-02/2020-05-02", ["may2-first"]),
    ("two_days", "2020-05-01/2020-05-02", ["may1-first", "may1-noon", "may1-last", "may2-first"]),
    ("three_days", "2020-04-30/2020-05-02", list(EDGE_CALLS)),
    ("to_absent", "2020-05-01", ["may1-first", "may1-noon", "may1-last", "may2-first"]),
    (
        "timestamps_inclusive_at_both_ends",
        f"{MAY1_FIRST}/{MAY1_LAST}",
        ["may1-first", "may1-noon", "may1-last"],
    ),
    ("timestamps_one_second_inside", f"{MAY1_FIRST + 1}/{MAY1_LAST - 1}", ["may1-noon"]),
    ("timestamps_one_second_wide", f"{APR30_LAST}/{MAY1_FIRST}", ["apr30-last", "may1-first"]),
    ("timestamps_one_instant", f"{MAY1_NOON}/{MAY1_NOON}", ["may1-noon"]),
    ("timestamp_from_date_to", f"{MAY1_LAST}/2020-05-02", ["may1-last", "may2-first"]),
    ("date_from_timestamp_to", f"2020-04-30/{MAY1_FIRST}", ["apr30-last", "may1-first"]),
    ("from_zero_to_largest_timestamp", "0/999999999999999999", list(EDGE_CALLS)),
    ("from_year_one_to_year_9999", "0001-01-01/9999-12-31", list(EDGE_CALLS)),
    ("timestamp_from_to_absent", f"{MAY2_FIRST}", ["may2-first"]),
]


def test_the_window_is_inclusive_at_both_ends_in_moscow_time(
    client: tuple[TestClient, Store],
) -> None:
    http, store = client
    account, key = new_account(store, "edges")
    load(store, account, [call(uid, at) for uid, at in EDGE_CALLS.items()])
    answers = {
        name: ids(api(http, f"json/v3/{key}/call/get/0/{dates}")) for name, dates, _ in WINDOW_CASES
    }
    assert answers == {name: expected for name, _, expected in WINDOW_CASES}


def test_the_expected_edge_instants_match_the_call_times() -> None:
    """The hand-computed UTC values above really are the Moscow wall-clock times."""
    moscow = ZoneInfo("Europe/Moscow")
    assert datetime.fromtimestamp(MAY1_FIRST, moscow) == datetime(
        2020, 5, 1, 0, 0, 0, tzinfo=moscow
    )
    assert datetime.fromtimestamp(MAY1_LAST, moscow) == datetime(
        2020, 5, 1, 23, 59, 59, tzinfo=moscow
    )
    assert datetime.fromtimestamp(MAY1_NOON, moscow) == datetime(
        2020, 5, 1, 12, 0, 0, tzinfo=moscow
    )
    assert (MAY1_FIRST, MAY1_LAST) == (1588280400, 1588366799)


def test_to_absent_means_up_to_now(client: tuple[TestClient, Store]) -> None:
    http, store = client
    account, key = new_account(store, "now")
    moscow = store.settings.zone
    now = datetime.now(moscow)
    past = (now - timedelta(minutes=2)).strftime("%Y-%m-%d %H:%M:%S")
    future = (now + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    load(store, account, [call("past", past), call("future", future)])
    yesterday = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    day_after_tomorrow = (now + timedelta(days=2)).strftime("%Y-%m-%d")
    assert ids(api(http, f"json/v3/{key}/call/get/0/{yesterday}")) == ["past"]
    assert ids(api(http, f"json/v3/{key}/call/get/0/{yesterday}/")) == ["past"]
    both = api(http, f"json/v3/{key}/call/get/0/{yesterday}/{day_after_tomorrow}")
    assert ids(both) == ["past", "future"]


# -- pages -----------------------------------------------------------------------------------


def numbered_calls(count: int, prefix: str = "c") -> list[Record]:
    """``count`` calls one second apart on 2020-05-01, from 10:00:00 Moscow time."""
    start = datetime(2020, 5, 1, 10, 0, 0)
    return [
        call(f"{prefix}{n:04d}", (start + timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S"))
        for n in range(count)
    ]


def test_exactly_one_page_size_of_calls_is_one_page_and_one_more_makes_two(
    client: tuple[TestClient, Store],
) -> None:
    http, store = client
    assert store.settings.page_size == 1000
    account, key = new_account(store, "thousand")
    records = numbered_calls(1001)
    load(store, account, records[:1000])
    query = f"json/v3/{key}/call/get/{{}}/2020-05-01/2020-05-01"
    assert ids(api(http, query.format(0))) == [r["universalId"] for r in records[:1000]]
    assert_error(api(http, query.format(1)), PAGE)

    load(store, account, records[1000:])
    assert len(calls_of(api(http, query.format(0)))) == 1000
    last_page = calls_of(api(http, query.format(1)))
    assert [(r["universalId"], r["page"]) for r in last_page] == [("c1000", 1)]
    assert_error(api(http, query.format(2)), PAGE)


SPLITS = {1: [1], 3: [3], 4: [3, 1], 6: [3, 3], 7: [3, 3, 1]}  # calls -> page sizes


def test_small_pages_split_the_window_at_the_page_size(make_client: MakeClient) -> None:
    http, store = make_client(page_size=3)
    walked: dict[int, list[list[str]]] = {}
    for count in SPLITS:
        account, key = new_account(store, f"small-{count}")
        load(store, account, numbered_calls(count, prefix=f"s{count}-"))
        query = f"json/v3/{key}/call/get/{{}}/2020-05-01/2020-05-01"
        walked[count] = walk(http, query.format)
    assert {count: [len(page) for page in pages] for count, pages in walked.items()} == SPLITS
    for count, pages in walked.items():
        expected = [f"s{count}-{n:04d}" for n in range(count)]
        assert [uid for page in pages for uid in page] == expected


# Ten calls in a scrambled import order, with ties in callTime.
TIED_CALLS = [
    call("t-h", "2020-05-01 12:00:02"),
    call("t-a", "2020-05-01 12:00:00"),
    call("t-j", "2020-05-01 12:00:03"),
    call("t-c", "2020-05-01 12:00:01"),
    call("t-b", "2020-05-01 12:00:00"),
    call("t-i", "2020-05-01 12:00:02"),
    call("t-d", "2020-05-01 12:00:01"),
    call("t-e", "2020-05-01 12:00:01"),
    call("t-g", "2020-05-01 12:00:00"),
    call("t-f", "2020-05-01 12:00:01"),
]
TIED_TIMES = {record["universalId"]: record["callTime"] for record in TIED_CALLS}


def test_walking_small_pages_returns_every_call_once_in_call_time_order(
    make_client: MakeClient,
) -> None:
    http, store = make_client(page_size=3)
    account, key = new_account(store, "walker")
    load(store, account, TIED_CALLS)
    pages = walk(http, lambda page: f"json/v3/{key}/call/get/{page}/2020-05-01/2020-05-01")
    assert [len(page) for page in pages] == [3, 3, 3, 1]
    walked = [uid for page in pages for uid in page]
    assert sorted(walked) == sorted(TIED_TIMES)
    times = [TIED_TIMES[uid] for uid in walked]
    assert times == sorted(times)


def test_ties_come_in_the_same_order_on_every_request_and_every_page_size(
    make_client: MakeClient,
) -> None:
    small, store = make_client(page_size=3)
    large, _ = make_client()  # the same database, pages of 1000
    account, key = new_account(store, "ties")
    load(store, account, TIED_CALLS)

    def walked(http: TestClient, to: str) -> list[str]:
        query = f"json/v3/{key}/call/get/{{}}/2020-05-01/{to}"
        return [uid for page in walk(http, query.format) for uid in page]

    first = walked(small, "2020-05-01")
    assert walked(small, "2020-05-01") == first
    assert walked(small, "9999-12-31") == first  # another window: no remembered boundaries
    assert ids(api(large, f"json/v3/{key}/call/get/0/2020-05-01/2020-05-01")) == first
    assert [TIED_TIMES[uid] for uid in first] == sorted(TIED_TIMES.values())


def test_a_new_page_size_does_not_reuse_the_page_boundaries_of_the_old_one(
    make_client: MakeClient,
) -> None:
    small, store = make_client(page_size=3)
    account, key = new_account(store, "resized")
    load(store, account, TIED_CALLS)
    query = f"json/v3/{key}/call/get/{{}}/2020-05-01/2020-05-01"
    assert len(walk(small, query.format)) == 4
    large, _ = make_client()  # the same database, restarted with pages of 1000
    assert len(ids(api(large, query.format(0)))) == 10
    assert_error(api(large, query.format(1)), PAGE)


def test_a_page_requested_directly_is_that_page_of_the_walk(make_client: MakeClient) -> None:
    http, store = make_client(page_size=3)
    account, key = new_account(store, "direct")
    load(store, account, TIED_CALLS)
    pages = walk(http, lambda page: f"json/v3/{key}/call/get/{page}/2020-05-01/2020-05-01")
    fresh, _ = make_client(page_size=3)
    for page in (3, 1, 2):  # a window never walked before, pages out of order
        direct = api(fresh, f"json/v3/{key}/call/get/{page}/2020-05-01/1588366799")
        assert ids(direct) == pages[page]


def test_get_with_role_pages_merge_both_owners_without_repeats(make_client: MakeClient) -> None:
    http, store = make_client(page_size=3)
    large, _ = make_client()
    alice, alice_key = new_account(store, "alice")
    bob, _ = new_account(store, "bob")
    grant = store.create_grant(store.create_role(bob, "viewer").id, alice)
    assert grant.grantee_id == alice
    load(store, alice, TIED_CALLS[:5])
    load(store, bob, [call("bob-" + r["universalId"], r["callTime"]) for r in TIED_CALLS])
    query = f"json/v3/{alice_key}/call/getWithRole/{{}}/2020-05-01/2020-05-01"
    pages = walk(http, query.format)
    walked = [uid for page in pages for uid in page]
    assert [len(page) for page in pages] == [3, 3, 3, 3, 3]
    assert len(walked) == len(set(walked)) == 15
    times = [TIED_TIMES[uid.removeprefix("bob-")] for uid in walked]
    assert times == sorted(times)
    assert ids(api(large, query.format(0))) == walked


def test_a_walk_with_a_past_to_is_not_shifted_by_calls_imported_during_it(
    make_client: MakeClient,
) -> None:
    http, store = make_client(page_size=3)
    account, key = new_account(store, "stable")
    load(store, account, TIED_CALLS)
    query = f"json/v3/{key}/call/get/{{}}/2020-05-01/2020-05-01"
    seen = ids(api(http, query.format(0)))
    # Earlier than every call of the walk: without a snapshot they would shift every page.
    load(store, account, [call(f"late-{n}", "2020-05-01 11:00:00") for n in range(4)])
    seen += [uid for page in walk(http, query.format, start=1) for uid in page]
    assert sorted(seen) == sorted(TIED_TIMES)


def test_a_walk_is_not_shifted_when_another_reader_starts_the_same_walk_after_an_import(
    make_client: MakeClient,
) -> None:
    first, store = make_client(page_size=3)
    second, _ = make_client(page_size=3)
    account, key = new_account(store, "two-readers")
    load(store, account, TIED_CALLS)
    query = f"json/v3/{key}/call/get/{{}}/2020-05-01/2020-05-01"
    seen = ids(api(first, query.format(0))) + ids(api(first, query.format(1)))
    load(store, account, [call(f"late-{n}", "2020-05-01 11:00:00") for n in range(4)])
    # Both walks share the pages: the second's page 0 is the first's, with the calls that
    # landed in its range since (a page may grow so; docs/api.md, "Paging").
    late = [f"late-{n}" for n in range(4)]
    assert ids(api(second, query.format(0))) == late + seen[:3]
    seen += ids(api(first, query.format(2))) + ids(api(first, query.format(3)))
    assert sorted(seen) == sorted(TIED_TIMES)
    walked = [uid for page in walk(second, query.format, start=1) for uid in page]
    assert sorted(late + seen[:3] + walked) == sorted([*TIED_TIMES, *late])


def test_a_call_moved_later_during_a_walk_may_appear_again_in_its_new_state(
    make_client: MakeClient,
) -> None:
    # The one case the shared pages cannot cover (docs/api.md, "Paging"): nothing in the
    # URL tells this walk from one that began after the move, which must see the call.
    http, store = make_client(page_size=3)
    account, key = new_account(store, "moved")
    load(store, account, TIED_CALLS)
    query = f"json/v3/{key}/call/get/{{}}/2020-05-01/2020-05-01"
    first = api(http, query.format(0))
    assert "t-a" in ids(first)
    load(store, account, [call("t-a", "2020-05-01 12:00:05")])  # same call, moved to the end
    rest = [uid for page in walk(http, query.format, start=1) for uid in page]
    assert sorted(ids(first) + rest) == sorted([*TIED_TIMES, "t-a"])
    assert rest[-1] == "t-a"  # in its new place, at the end
    fresh = [uid for page in walk(http, query.format) for uid in page]
    assert sorted(fresh) == sorted(TIED_TIMES)
    assert fresh[-1] == "t-a"


# -- the record ------------------------------------------------------------------------------

FULL_RECORD: Record = {
    "page": 0,
    "universalId": "1588325696000000001",
    "serviceType": "callback",
    "clientNumber": "79161234567",
    "managerNumber": "74951234567",
    "callerIdToManager": "74950000001",
    "callerIdToClient": "74950000002",
    "statusFirst": 200,
    "statusSecond": 486,
    "status": "success",
    "callTime": "2020-05-01 12:34:56",
    "localDate": "2020-05-01 14:34:56",
    "timezoneOffset": "+0200",
    "duration": 125,
    "tariffTime": 3,
    "site": "пример.рф",
    "recordUrl": "https://records.example/1.mp3",
    "unique": True,
    "target": True,
    "uniqueTarget": False,
    "visitSite": "https://пример.рф/визит",
    "siteVisit": "https://пример.рф/визит",
    "referrer": "https://yandex.ru/search/?text=звонок",
    "utm_source": "yandex",
    "utm_medium": "cpc",
    "utm_campaign": "весна",
    "utm_content": "объявление",
    "utm_term": "заказать звонок",
    "yaClid": "ya1",
    "gaClid": "ga1",
    "roistatClid": "rs1",
    "calltouchClid": "ct1",
    "comagicClid": "cm1",
    "city": "Москва",
    "region": "Московская область",
    "country": "Россия",
    "ipAddress": "192.0.2.10",
    "pagesCount": 5,
    "entryPoint": "https://пример.рф/",
    "entryPointQuery": "https://пример.рф/?utm_source=yandex",
    "callPage": "https://пример.рф/контакты",
    "counts": 2,
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
    "device": "desktop",
    "cbWidgetHash": "a1b2c3",
    "cbToolId": 11,
    "cbCallId": 12,
    "cbUid": 13,
    "cbToolName": "Обратный звонок",
    "cbOfficeNumber": "0",
    "cbOfficeName": "Офис на Тверской",
    "cbOrderDate": "2020-05-01 12:30:00",
    "cbAttempt": 2,
    "cbAttemptsQueue": [1, 2],
    "cbConnectType": "smartcall",
    "cbSmartCallCount": 1,
    "cbIvrCount": 3,
    "cbEventSource": "widget",
    "ctCallId": 0,
    "ctCampaignId": 0,
    "ctCampaignName": "",
    "ctIsListened": "",
    "tags": ["новый", "vip"],
    "hooks": [
        {
            "hookEventName": "AFTER_CALL_FINISH",
            "hookAddress": "https://hooks.example/после",
            "hookMethod": "POST",
            "hookResponseStatus": 200,
        }
    ],
}


def has_type(value: Any, kind: str) -> bool:
    if kind == "int":
        return type(value) is int
    if kind == "bool":
        return type(value) is bool
    if kind == "string":
        return type(value) is str
    if kind == "array of int":
        return type(value) is list and all(type(item) is int for item in value)
    if kind == "array of string":
        return type(value) is list and all(type(item) is str for item in value)
    assert kind == "array of object"
    return type(value) is list and all(
        type(item) is dict and list(item) == HOOK_KEYS for item in value
    )


def nulls(value: Any, path: str = "$") -> list[str]:
    """Paths of every null inside a JSON value."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in nulls(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [found for n, item in enumerate(value) for found in nulls(item, f"{path}[{n}]")]
    return []


@pytest.fixture
def one_full_call(client: tuple[TestClient, Store]) -> tuple[TestClient, str]:
    http, store = client
    account, key = new_account(store, "full")
    load(store, account, [{k: v for k, v in FULL_RECORD.items() if k != "page"}])
    return http, key


def test_the_spec_field_list_is_the_models_field_list() -> None:
    assert tuple(SPEC_TYPES) == FIELD_NAMES


def test_a_record_has_exactly_the_contracts_keys_in_order(
    one_full_call: tuple[TestClient, str],
) -> None:
    http, key = one_full_call
    (record,) = calls_of(api(http, f"json/v3/{key}/call/get/0/2020-05-01"))
    assert list(record) == list(FIELD_NAMES)
    assert list(record) == list(SPEC_TYPES)


def test_a_record_comes_back_exactly_as_imported(one_full_call: tuple[TestClient, str]) -> None:
    http, key = one_full_call
    response = api(http, f"json/v3/{key}/call/get/0/2020-05-01")
    assert ordered(response.content) == ordered(json.dumps([FULL_RECORD]))


def test_every_value_has_the_contracts_json_type(one_full_call: tuple[TestClient, str]) -> None:
    http, key = one_full_call
    (record,) = calls_of(api(http, f"json/v3/{key}/call/get/0/2020-05-01"))
    wrong = {k: v for k, v in record.items() if not has_type(v, SPEC_TYPES[k])}
    assert wrong == {}


def test_non_ascii_text_is_sent_as_raw_utf8(one_full_call: tuple[TestClient, str]) -> None:
    http, key = one_full_call
    response = api(http, f"json/v3/{key}/call/get/0/2020-05-01")
    assert response.headers["content-type"] == JSON_CONTENT_TYPE
    assert "Москва".encode() in response.content
    assert "Офис на Тверской".encode() in response.content
    assert b"\\u" not in response.content


def test_a_minimal_record_has_empty_values_and_never_null(
    client: tuple[TestClient, Store],
) -> None:
    http, store = client
    account, key = new_account(store, "minimal")
    load(store, account, [call("min-1", "2020-05-01 10:00:00")])
    response = api(http, f"json/v3/{key}/call/get/0/2020-05-01")
    assert b"null" not in response.content
    (record,) = calls_of(response)
    assert nulls(record) == []
    given = {
        "universalId": "min-1",
        "serviceType": "calltracking",
        "status": "success",
        "callTime": "2020-05-01 10:00:00",
    }
    expected = {k: given.get(k, EMPTY[kind]) for k, kind in SPEC_TYPES.items()}
    assert list(record.items()) == list(expected.items())
    wrong = {k: v for k, v in record.items() if not has_type(v, SPEC_TYPES[k])}
    assert wrong == {}


@pytest.mark.parametrize(
    "given",
    [
        pytest.param({"visitSite": "https://a.example/"}, id="only_visitSite"),
        pytest.param({"siteVisit": "https://a.example/"}, id="only_siteVisit"),
        pytest.param(
            {"visitSite": "https://a.example/", "siteVisit": "https://a.example/"}, id="both"
        ),
    ],
)
def test_visit_site_and_site_visit_are_the_same_value(
    client: tuple[TestClient, Store], given: Record
) -> None:
    http, store = client
    account, key = new_account(store, "visits")
    load(store, account, [call("v-1", "2020-05-01 10:00:00", **given)])
    (record,) = calls_of(api(http, f"json/v3/{key}/call/get/0/2020-05-01"))
    assert record["visitSite"] == record["siteVisit"] == "https://a.example/"


def test_every_record_carries_the_requested_page(make_client: MakeClient) -> None:
    http, store = make_client(page_size=2)
    account, key = new_account(store, "paged")
    load(store, account, numbered_calls(5))
    for page, expected in [(0, 2), (1, 2), (2, 1), (1, 2)]:
        records = calls_of(api(http, f"json/v3/{key}/call/get/{page}/2020-05-01"))
        assert [record["page"] for record in records] == [page] * expected


# -- routes, HEAD, health --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/?", "/api?", "/api/index.php?"])
def test_every_documented_path_answers_the_same(world: World, path: str) -> None:
    query = f"json/v3/{world.user_key}/call/get/0/2020-05-01"
    reference = api(world.http, query)
    assert ids(reference) == ["alice-1"]
    answer = world.http.get(path + query)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == JSON_CONTENT_TYPE
    assert answer.content == reference.content
    assert_error(world.http.get(path + "yaml/v3"), FORMAT)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("json/v3/{user}/call/get/0/2020-05-01", id="page"),
        pytest.param("json/v3/{user}/call/get/0/2019-01-01/2019-01-01", id="error"),
    ],
)
def test_head_answers_the_get_headers_without_a_body(world: World, template: str) -> None:
    query = fill(template, world)
    identity = {"accept-encoding": "identity"}  # compare the lengths of the same encoding
    got = world.http.get("/api/?" + query, headers=identity)
    head = world.http.head("/api/?" + query, headers=identity)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == JSON_CONTENT_TYPE
    assert int(head.headers["content-length"]) == len(got.content) > 0


def test_health_check_answers_ok(world: World) -> None:
    answer = world.http.get("/healthz")
    assert answer.status_code == 200
    assert answer.content == b"ok\n"


# -- our failures: 503 and 500 ---------------------------------------------------------------


def assert_unavailable(response: Answer, *, head: bool = False) -> None:
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["content-type"] == JSON_CONTENT_TYPE
    if not head:
        assert ordered(response.content) == ordered(json.dumps(envelope(UNAVAILABLE)))


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("sqlite:///{tmp}/no-such-directory/calltrack.db", id="sqlite_missing_dir"),
        pytest.param("postgresql://postgres@127.0.0.1:1/x", id="postgres_closed_port"),
    ],
)
def test_an_unreachable_store_answers_503_with_retry_after(tmp_path: Path, url: str) -> None:
    database_url = url.format(tmp=tmp_path)
    settings = Settings.from_env(env={}, database_url=database_url, db_timeout=1)
    with TestClient(create_app(settings)) as http:
        assert_unavailable(http.get("/api/?json/v3/abcdefgh12345678/call/get/0/2020-05-01"))


def test_head_and_health_answer_503_when_the_store_is_unreachable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no-such-directory/calltrack.db"
    settings = Settings.from_env(env={}, database_url=url, db_timeout=1)
    query = "/api/?json/v3/abcdefgh12345678/call/get/0/2020-05-01"
    with TestClient(create_app(settings)) as http:
        got = http.get(query)
        head = http.head(query)
        assert_unavailable(head, head=True)
        assert head.content == b""
        assert int(head.headers["content-length"]) == len(got.content)
        health = http.get("/healthz")
        assert health.status_code == 503
        assert int(health.headers["retry-after"]) >= 1
    assert not (tmp_path / "no-such-directory").exists()


def broken_store(store: Store) -> Store:
    """A store of the same backend whose page reads fail unexpectedly."""

    def read_page(self: Store, *args: Any, **kwargs: Any) -> list[bytes]:
        raise RuntimeError("secret detail that must stay in the log")

    # A subclass of whichever backend the test runs on; built by type(), since a class
    # statement with a base known only at run time cannot be type-checked.
    backend: type[Store] = type(store)
    broken: Store = type("BrokenStore", (backend,), {"read_page": read_page})(store.settings)
    return broken


@pytest.fixture
def broken_http(store: Store) -> Iterator[tuple[TestClient, str]]:
    account, key = new_account(store, "broken")
    load(store, account, [call("b-1", "2020-05-01 10:00:00")])
    with TestClient(create_app(store.settings, broken_store(store))) as http:
        yield http, key


def test_an_unexpected_failure_answers_500_with_a_request_id_and_no_traceback(
    broken_http: tuple[TestClient, str],
) -> None:
    http, key = broken_http
    response = api(http, f"json/v3/{key}/call/get/0/2020-05-01")
    assert response.status_code == 500
    assert response.headers["content-type"] == JSON_CONTENT_TYPE
    request_id = response.headers["x-request-id"]
    assert request_id
    body = response.json()
    assert body["inbound"]["error"] == "Internal error"
    assert body["inbound"]["requestId"] == request_id
    assert body["info"] == SPEC_INFO
    assert body["payload"] == []
    for leak in (b"Traceback", b"RuntimeError", b"secret detail", b"read_page", b".py"):
        assert leak not in response.content


def test_each_unexpected_failure_gets_its_own_request_id(
    broken_http: tuple[TestClient, str],
) -> None:
    http, key = broken_http
    first = api(http, f"json/v3/{key}/call/get/0/2020-05-01")
    second = api(http, f"json/v3/{key}/call/get/0/2020-05-01")
    assert first.status_code == second.status_code == 500
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_documented_errors_still_answer_200_over_a_broken_store(
    broken_http: tuple[TestClient, str],
) -> None:
    http, key = broken_http
    assert_error(api(http, f"json/v3/{key}/call/get/x/2020-05-01"), PAGE)
