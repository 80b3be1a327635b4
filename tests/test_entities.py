"""The list entities (user, campaign, tag, phone, callrole): rows, windows, pages, key rules."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from calltrack import access
from calltrack.importer import import_bytes
from calltrack.store import Store
from tests.conftest import new_account
from tests.helpers_calls import jsonl, record

MakeClient = Callable[..., tuple[TestClient, Store]]
Client = tuple[TestClient, Store]
ALL = "0"  # from the epoch, to now


def rows(http: TestClient, key: str, entity: str, method: str = "get", tail: str = ALL) -> Any:
    answer = http.get(f"/api/?json/v3/{key}/{entity}/{method}/0/{tail}")
    assert answer.status_code == 200
    return answer.json()


def error_of(answer: Any) -> str:
    assert isinstance(answer, dict), answer
    return str(answer["inbound"]["error"])


def test_user_get_lists_the_keys_account_only(client: Client) -> None:
    http, store = client
    owner, key = new_account(store, "Рога и копыта")
    new_account(store, "someone else")
    [user] = rows(http, key, "user")
    assert list(user) == ["id", "name", "timezone", "created", "relation"]
    assert (user["id"], user["name"], user["relation"]) == (owner, "Рога и копыта", "self")
    assert user["timezone"] == "Europe/Moscow"


def test_user_get_with_role_adds_every_grantor_once(client: Client) -> None:
    http, store = client
    grantee, key = new_account(store, "agency")
    names = []
    for name in ("dealer", "clinic"):
        grantor, _ = new_account(store, name)
        names.append(name)
        for role_name in ("r1", "r2"):  # two grants from one grantor count once
            role = store.create_role(grantor, role_name)
            store.create_grant(role.id, grantee)
    new_account(store, "stranger")
    listed = rows(http, key, "user", "getWithRole")
    assert sorted(u["name"] for u in listed) == ["agency", "clinic", "dealer"]
    assert {u["name"]: u["relation"] for u in listed}["dealer"] == "grantor"


def test_campaigns_come_from_imported_calls_and_the_cli(client: Client) -> None:
    http, store = client
    owner, key = new_account(store, "a")
    calls = [
        record("c1", ctCampaignId=7, ctCampaignName="Весна", site="a.ru"),
        record("c2", ctCampaignId=7, ctCampaignName="renamed later", site="a.ru"),
        record("c3", serviceType="callback", ctCampaignId=0),
    ]
    import_bytes(store, owner, jsonl(calls), store.settings.zone)
    store.add_campaign(owner, 9, "Radio", "", "paused")
    listed = rows(http, key, "campaign")
    assert [(c["id"], c["name"], c["site"], c["status"]) for c in listed] == [
        (7, "Весна", "a.ru", "active"),
        (9, "Radio", "", "paused"),
    ]


def test_tags_are_counted_over_the_calls_in_the_window(client: Client) -> None:
    http, store = client
    owner, key = new_account(store, "a")
    calls = [
        record("t1", tags=["vip", "спам"], callTime="2020-05-01 10:00:00"),
        record("t2", tags=["vip", "vip"], callTime="2020-05-02 10:00:00"),
        record("t3", tags=["late"], callTime="2020-06-01 10:00:00"),
    ]
    import_bytes(store, owner, jsonl(calls), store.settings.zone)
    may = rows(http, key, "tag", tail="2020-05-01/2020-05-31")
    assert may == [{"name": "vip", "calls": 2}, {"name": "спам", "calls": 1}]
    # Re-importing a call with other tags replaces its tags.
    import_bytes(
        store, owner, jsonl([record("t2", callTime="2020-05-02 10:00:00")]), store.settings.zone
    )
    assert rows(http, key, "tag", tail="2020-05-01/2020-05-31") == [
        {"name": "vip", "calls": 1},
        {"name": "спам", "calls": 1},
    ]


def test_phones_list_their_campaign_and_kind(client: Client) -> None:
    http, store = client
    owner, key = new_account(store, "a")
    store.add_campaign(owner, 5, "Search", "a.ru", "active")
    store.add_phone(owner, "74950000001", 5, "Main office", "static")
    store.add_phone(owner, "74950000002", 0, "", "dynamic")
    other, _ = new_account(store, "b")
    store.add_phone(other, "74950000009", 0, "", "static")
    listed = rows(http, key, "phone")
    assert [(p["number"], p["campaignName"], p["kind"]) for p in listed] == [
        ("74950000001", "Search", "static"),
        ("74950000002", "", "dynamic"),
    ]


def test_callroles_show_grants_given_and_received(client: Client) -> None:
    http, store = client
    me, key = new_account(store, "me")
    other, _ = new_account(store, "other")
    store.create_grant(store.create_role(me, "out").id, other)
    store.create_grant(store.create_role(other, "in").id, me)
    revoked = store.create_role(other, "gone")
    store.create_grant(revoked.id, me)
    store.revoke_grant(revoked.id, me)
    listed = rows(http, key, "callrole")
    assert [(r["roleName"], r["direction"]) for r in listed] == [
        ("out", "granted"),
        ("in", "received"),
    ]


@pytest.mark.parametrize("entity", ["user", "campaign", "tag", "phone", "callrole"])
def test_a_role_key_reads_no_entity(client: Client, entity: str) -> None:
    http, store = client
    grantor, _ = new_account(store, "grantor")
    grantee, _ = new_account(store, "grantee")
    grant = store.create_grant(store.create_role(grantor, "r").id, grantee)
    role_key = access.issue_role_key(store, grant)
    assert error_of(rows(http, role_key, entity)) == "User is not recognized"


def test_entity_lists_page_like_calls(make_client: MakeClient) -> None:
    http, store = make_client(page_size=2)
    owner, key = new_account(store, "a")
    for number in range(5):
        store.add_phone(owner, f"7495000000{number}", 0, "", "static")
    pages = [http.get(f"/api/?json/v3/{key}/phone/get/{p}/0").json() for p in range(4)]
    assert [len(page) for page in pages[:3]] == [2, 2, 1]
    assert error_of(pages[3]) == "Incorrect page is set"


def test_an_empty_list_is_no_rows_found_and_windows_still_validate(client: Client) -> None:
    http, store = client
    _, key = new_account(store, "a")
    assert error_of(rows(http, key, "campaign")) == "No rows found"
    assert error_of(rows(http, key, "tag", tail="2020-02-30")) == (
        "Start date has wrong type. Possible format is 'Y-m-d' or timestamp"
    )
    assert error_of(rows(http, key, "user", "getByRole")) == "Method does not exist"


USER_FIELDS = ("id", "name", "timezone", "created", "relation")


def parsed_rows(fmt: str, text: str) -> list[dict[str, str]]:
    """The rows of a csv, xml or plain answer, every value as text."""
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    if fmt == "xml":
        return [{field.tag: field.text or "" for field in row} for row in ET.fromstring(text)]
    # plain: tab-separated, no header, in the entity's field order
    return [dict(zip(USER_FIELDS, line.split("\t"), strict=True)) for line in text.splitlines()]


@pytest.mark.parametrize("fmt", ["csv", "xml", "plain"])
def test_entities_answer_in_every_format(client: Client, fmt: str) -> None:
    http, store = client
    owner, key = new_account(store, "a & <b>")
    new_account(store, "someone else")
    [user] = rows(http, key, "user")  # JSON: checked field by field above
    answer = http.get(f"/api/?{fmt}/v3/{key}/user/get/0/0")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(
        {"csv": "text/csv", "xml": "application/xml", "plain": "text/plain"}[fmt]
    )
    assert user["id"] == owner
    assert parsed_rows(fmt, answer.text) == [{name: str(user[name]) for name in USER_FIELDS}]
