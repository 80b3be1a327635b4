"""Who sees which calls (API.md section 3), end to end through the HTTP API on both backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from calltrack import access
from calltrack.store import Store
from tests.conftest import new_account
from tests.helpers_calls import api, seed, seen_ids

Client = tuple[TestClient, Store]
NOT_RECOGNIZED = "User is not recognized"
NO_ROWS = "No rows found"


def grant(store: Store, grantor_id: int, grantee_id: int, role_name: str = "reports") -> str:
    """Create a role of the grantor, grant it to the grantee, and issue the grant's role key."""
    role = store.create_role(grantor_id, role_name)
    created = store.create_grant(role.id, grantee_id)
    return access.issue_role_key(store, created)


@pytest.fixture
def three(client: Client) -> tuple[TestClient, Store, dict[str, tuple[int, str]]]:
    """Accounts a, b and c, each with its own calls a1 a2 / b1 b2 / c1."""
    http, store = client
    accounts = {name: new_account(store, name) for name in ("a", "b", "c")}
    seed(store, accounts["a"][0], "101", "102")
    seed(store, accounts["b"][0], "201", "202")
    seed(store, accounts["c"][0], "301")
    return http, store, accounts


ThreeAccounts = tuple[TestClient, Store, dict[str, tuple[int, str]]]


def test_get_sees_only_the_keys_own_calls(three: ThreeAccounts) -> None:
    http, _, accounts = three
    assert seen_ids(http, accounts["a"][1], "get") == ["101", "102"]
    assert seen_ids(http, accounts["b"][1], "get") == ["201", "202"]
    assert seen_ids(http, accounts["c"][1], "get") == ["301"]


def test_get_of_an_account_without_calls_finds_no_rows_even_when_others_have_some(
    three: ThreeAccounts,
) -> None:
    http, store, _ = three
    _, key = new_account(store, "empty")
    assert seen_ids(http, key, "get") == NO_ROWS


def test_every_user_key_of_an_account_sees_the_same_calls(three: ThreeAccounts) -> None:
    http, store, accounts = three
    second_key = access.issue_user_key(store, accounts["a"][0])
    assert seen_ids(http, second_key, "get") == ["101", "102"]


def test_get_by_role_sees_only_the_grantors_calls_never_the_grantees_own(
    three: ThreeAccounts,
) -> None:
    http, store, accounts = three
    role_key = grant(store, accounts["b"][0], accounts["a"][0])
    assert seen_ids(http, role_key, "getByRole") == ["201", "202"]


def test_a_role_granted_to_oneself_yields_no_rows(three: ThreeAccounts) -> None:
    http, store, accounts = three
    role_key = grant(store, accounts["a"][0], accounts["a"][0])
    assert seen_ids(http, role_key, "getByRole") == NO_ROWS
    # ... and it does not make the grantor's own calls appear twice in getWithRole.
    assert seen_ids(http, accounts["a"][1], "getWithRole") == ["101", "102"]


def test_get_with_role_without_grants_is_the_own_calls(three: ThreeAccounts) -> None:
    http, _, accounts = three
    assert seen_ids(http, accounts["a"][1], "getWithRole") == ["101", "102"]


def test_get_with_role_is_own_plus_grantor_calls_each_once_under_overlapping_grants(
    three: ThreeAccounts,
) -> None:
    http, store, accounts = three
    grant(store, accounts["b"][0], accounts["a"][0], "reports")
    grant(store, accounts["b"][0], accounts["a"][0], "audit")
    assert seen_ids(http, accounts["a"][1], "getWithRole") == ["101", "201", "102", "202"]


def test_get_with_role_walks_every_visible_call_exactly_once_across_pages(
    make_client: Callable[..., Client],
) -> None:
    http, store = make_client(page_size=2)
    (a_id, a_key), (b_id, _), (c_id, _) = (new_account(store, n) for n in ("a", "b", "c"))
    seed(store, a_id, "101", "102", "103")
    seed(store, b_id, "201", "202")
    seed(store, c_id, "301", "302")
    grant(store, b_id, a_id, "reports")
    grant(store, b_id, a_id, "audit")
    walked: list[str] = []
    for page in range(10):  # loop guard
        body = api(http, a_key, "getWithRole", page)
        if isinstance(body, dict):
            assert body["inbound"]["error"] == "Incorrect page is set"
            break
        assert [call["page"] for call in body] == [page] * len(body)
        walked += [call["universalId"] for call in body]
    assert walked == ["101", "201", "102", "202", "103"]


def test_get_with_role_includes_every_active_grantor_and_nobody_else(
    three: ThreeAccounts,
) -> None:
    http, store, accounts = three
    outsider_id, outsider_key = new_account(store, "d")
    seed(store, outsider_id, "401")
    grant(store, accounts["b"][0], accounts["a"][0])
    grant(store, accounts["c"][0], accounts["a"][0])
    assert seen_ids(http, accounts["a"][1], "getWithRole") == ["101", "201", "301", "102", "202"]
    assert seen_ids(http, outsider_key, "getWithRole") == ["401"]


def test_a_grantee_of_several_grantors_has_one_working_role_key_per_grant(
    three: ThreeAccounts,
) -> None:
    http, store, accounts = three
    from_b = grant(store, accounts["b"][0], accounts["a"][0])
    from_c = grant(store, accounts["c"][0], accounts["a"][0])
    assert seen_ids(http, from_b, "getByRole") == ["201", "202"]
    assert seen_ids(http, from_c, "getByRole") == ["301"]


def test_granting_a_role_does_not_let_the_grantor_see_the_grantees_calls(
    three: ThreeAccounts,
) -> None:
    http, store, accounts = three
    grant(store, accounts["b"][0], accounts["a"][0])
    assert seen_ids(http, accounts["b"][1], "getWithRole") == ["201", "202"]
    assert seen_ids(http, accounts["b"][1], "get") == ["201", "202"]


def test_a_revoked_user_key_is_not_recognized_on_the_next_request(three: ThreeAccounts) -> None:
    http, store, accounts = three
    account_id, key = accounts["a"]
    other_key = access.issue_user_key(store, account_id)
    assert seen_ids(http, key, "get") == ["101", "102"]
    store.revoke_key(store.find_key(key_hash=access.hash_key(key)).id)
    assert seen_ids(http, key, "get") == NOT_RECOGNIZED
    assert seen_ids(http, key, "getWithRole") == NOT_RECOGNIZED
    assert seen_ids(http, other_key, "get") == ["101", "102"]


def test_a_revoked_grant_stops_its_role_key_and_leaves_get_with_role(
    three: ThreeAccounts,
) -> None:
    http, store, accounts = three
    a_id, a_key = accounts["a"]
    role = store.create_role(accounts["b"][0], "reports")
    role_key = access.issue_role_key(store, store.create_grant(role.id, a_id))
    assert seen_ids(http, role_key, "getByRole") == ["201", "202"]
    assert seen_ids(http, a_key, "getWithRole") == ["101", "201", "102", "202"]

    store.revoke_grant(role.id, a_id)

    assert seen_ids(http, role_key, "getByRole") == NOT_RECOGNIZED
    assert seen_ids(http, a_key, "getWithRole") == ["101", "102"]


def test_revoking_one_of_two_overlapping_grants_keeps_the_grantor_through_the_other(
    three: ThreeAccounts,
) -> None:
    http, store, accounts = three
    a_id, a_key = accounts["a"]
    reports = store.create_role(accounts["b"][0], "reports")
    store.create_grant(reports.id, a_id)
    audit = store.create_role(accounts["b"][0], "audit")
    audit_key = access.issue_role_key(store, store.create_grant(audit.id, a_id))

    store.revoke_grant(reports.id, a_id)

    assert seen_ids(http, a_key, "getWithRole") == ["101", "201", "102", "202"]
    assert seen_ids(http, audit_key, "getByRole") == ["201", "202"]


def test_regranting_after_a_revoke_issues_a_new_key_and_the_old_one_stays_dead(
    three: ThreeAccounts,
) -> None:
    http, store, accounts = three
    a_id, a_key = accounts["a"]
    role = store.create_role(accounts["b"][0], "reports")
    old_key = access.issue_role_key(store, store.create_grant(role.id, a_id))
    store.revoke_grant(role.id, a_id)

    new_grant = store.create_grant(role.id, a_id)
    new_key = access.issue_role_key(store, new_grant)

    assert new_key != old_key
    assert seen_ids(http, new_key, "getByRole") == ["201", "202"]
    assert seen_ids(http, old_key, "getByRole") == NOT_RECOGNIZED
    assert seen_ids(http, a_key, "getWithRole") == ["101", "201", "102", "202"]


@pytest.mark.parametrize("method", ["get", "getWithRole"])
def test_a_role_key_is_never_recognized_by_user_methods(three: ThreeAccounts, method: str) -> None:
    http, store, accounts = three
    role_key = grant(store, accounts["b"][0], accounts["a"][0])
    assert seen_ids(http, role_key, method) == NOT_RECOGNIZED


def test_a_user_key_is_never_recognized_by_get_by_role(three: ThreeAccounts) -> None:
    http, store, accounts = three
    grant(store, accounts["b"][0], accounts["a"][0])
    assert seen_ids(http, accounts["a"][1], "getByRole") == NOT_RECOGNIZED
    assert seen_ids(http, accounts["b"][1], "getByRole") == NOT_RECOGNIZED


def test_grants_are_not_transitive(three: ThreeAccounts) -> None:
    http, store, accounts = three
    (a_id, a_key), (b_id, b_key), (c_id, _) = accounts["a"], accounts["b"], accounts["c"]
    grant(store, c_id, b_id)  # C shares with B
    a_role_key = grant(store, b_id, a_id)  # B shares with A

    assert seen_ids(http, b_key, "getWithRole") == ["201", "301", "202"]
    assert seen_ids(http, a_key, "getWithRole") == ["101", "201", "102", "202"]
    assert seen_ids(http, a_role_key, "getByRole") == ["201", "202"]


def test_keys_are_stored_only_as_hashes(client: Client, tmp_path: Path) -> None:
    http, store = client
    account_id, user_key = new_account(store, "a")
    _, other_key = new_account(store, "b")
    role_key = grant(store, store.find_account("b").id, account_id)
    keys = (user_key, other_key, role_key)
    assert seen_ids(http, role_key, "getByRole") == NO_ROWS  # the keys do work

    if store.dialect == "sqlite":
        files = [p for p in tmp_path.iterdir() if p.name.startswith("calltrack.db")]
        assert any(p.name == "calltrack.db-wal" for p in files)
        stored = b"".join(p.read_bytes() for p in files)
    else:
        import psycopg

        with psycopg.connect(store.settings.database_url) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                ).fetchall()
            ]
            stored = b"".join(
                repr(conn.execute(f"SELECT * FROM {table}").fetchall()).encode() for table in tables
            )
    for key in keys:
        assert key.encode() not in stored
        assert access.hash_key(key).encode() in stored
