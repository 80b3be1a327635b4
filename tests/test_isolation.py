"""Who sees which calls (API.md section 3) as a property: random worlds against a small model.

A world is accounts, user keys (some revoked), roles, grants (some revoked, some to the grantor
itself, some whose role key alone is revoked, chains A->B->C) and calls whose call times
collide within and across accounts. It is built through the store and ``access`` exactly as
the CLI builds it. Then every key of the world, and one that was never issued, asks every
read method through the HTTP API with pages of 2 calls, walking every page; the union of the
pages must be what the model says, with no call twice, and the walk must end where the
contract says.

The model is written from section 3 of the contract, not from src. More examples:
``CALLTRACK_HYPOTHESIS_EXAMPLES=2000 pytest tests/test_isolation.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from calltrack import access
from calltrack.errors import Conflict
from calltrack.importer import import_bytes
from calltrack.store import Store

EXAMPLES = int(os.environ.get("CALLTRACK_HYPOTHESIS_EXAMPLES", "25"))
PAGE_SIZE = 2
METHODS = ("get", "getByRole", "getWithRole")
WINDOW = "2020-05-01/2020-05-02"  # dates: from 00:00:00 of the 1st to 23:59:59 of the 2nd
FIRST, LAST = "2020-05-01 00:00:00", "2020-05-02 23:59:59"
# Few distinct times, so calls collide; two just outside the window.
TIMES = (
    "2020-04-30 23:59:59",
    "2020-05-01 00:00:00",
    "2020-05-01 12:00:00",
    "2020-05-02 23:59:59",
    "2020-05-03 00:00:00",
)
NOT_RECOGNIZED = "User is not recognized"
NO_ROWS = "No rows found"
BAD_PAGE = "Incorrect page is set"

MakeClient = Callable[..., tuple[TestClient, Store]]


@dataclass(frozen=True)
class GrantPlan:
    role: int  # index into World.roles
    grantee: int
    revoke_grant: bool
    revoke_key: bool  # the grant's role key alone


@dataclass(frozen=True)
class World:
    accounts: int
    revoke_first_key: tuple[bool, ...]  # per account: its first user key revoked
    extra_keys: tuple[tuple[int, bool], ...]  # (account, revoked)
    roles: tuple[int, ...]  # the grantor of each role
    grants: tuple[GrantPlan, ...]  # in order; a grant still active is not granted again
    calls: tuple[tuple[int, int], ...]  # (owner, index into TIMES)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    accounts = draw(st.integers(1, 4))
    account = st.integers(0, accounts - 1)
    sometimes = st.sampled_from((False, False, True))
    roles = tuple(draw(st.lists(account, max_size=3)))
    grants = st.builds(
        GrantPlan, st.integers(0, max(0, len(roles) - 1)), account, sometimes, sometimes
    )
    return World(
        accounts=accounts,
        revoke_first_key=tuple(draw(st.lists(sometimes, min_size=accounts, max_size=accounts))),
        extra_keys=tuple(draw(st.lists(st.tuples(account, sometimes), max_size=2))),
        roles=roles,
        grants=tuple(draw(st.lists(grants, max_size=6))) if roles else (),
        calls=tuple(
            draw(st.lists(st.tuples(account, st.integers(0, len(TIMES) - 1)), max_size=10))
        ),
    )


# A chain A->B->C (C shares with B, B with A), a role granted to its own grantor, a revoked
# grant, a grant whose key alone is revoked, and calls on the same second in every account.
CHAIN = World(
    accounts=4,
    revoke_first_key=(False, False, False, True),
    extra_keys=((0, False), (1, True)),
    roles=(1, 2, 0, 3),
    grants=(
        GrantPlan(0, 0, revoke_grant=False, revoke_key=False),  # B's role to A
        GrantPlan(1, 1, revoke_grant=False, revoke_key=False),  # C's role to B
        GrantPlan(2, 0, revoke_grant=False, revoke_key=False),  # A's role to A itself
        GrantPlan(3, 0, revoke_grant=True, revoke_key=False),  # D's role to A, revoked
        GrantPlan(3, 0, revoke_grant=False, revoke_key=True),  # ... granted again, key revoked
        GrantPlan(0, 2, revoke_grant=False, revoke_key=False),  # B's role to C
        GrantPlan(1, 0, revoke_grant=True, revoke_key=False),  # C's role to A, revoked
    ),
    calls=tuple((owner, t) for owner in range(4) for t in (1, 2, 2, 3, 0, 4)),
)


@dataclass
class Key:
    """A key of the world and what the model needs to know about it."""

    text: str
    account: int
    revoked: bool = False
    grant: int | None = None  # index into Built.grants for a role key


@dataclass
class Built:
    keys: list[Key] = field(default_factory=list)
    grants: list[tuple[int, int, bool]] = field(default_factory=list)  # grantor, grantee, revoked
    owned: dict[int, set[str]] = field(default_factory=dict)  # account -> ids in the window


def build(store: Store, world: World) -> Built:
    """Create the world with the calls the CLI makes, and remember what it holds."""
    tag = uuid.uuid4().hex[:10]  # examples share the database: each world is new accounts
    built = Built()
    ids: list[int] = []
    for index in range(world.accounts):
        created = store.create_account(f"{tag}-{index}")  # `calltrack account add`
        ids.append(created.id)
        built.keys.append(Key(access.issue_user_key(store, created.id), index))
        built.owned[index] = set()
    for owner, revoked in world.extra_keys:  # `calltrack key issue`
        built.keys.append(Key(access.issue_user_key(store, ids[owner]), owner, revoked))
    for index, revoked in enumerate(world.revoke_first_key):
        built.keys[index].revoked = revoked
    role_ids = [
        store.create_role(ids[grantor], f"role-{n}").id  # `calltrack role add`
        for n, grantor in enumerate(world.roles)
    ]
    active: set[tuple[int, int]] = set()
    for plan in world.grants:
        grantor = world.roles[plan.role]
        if (plan.role, plan.grantee) in active:  # `calltrack role grant` refuses it
            with pytest.raises(Conflict):
                store.create_grant(role_ids[plan.role], ids[plan.grantee])
            continue
        grant = store.create_grant(role_ids[plan.role], ids[plan.grantee])
        role_key = access.issue_role_key(store, grant)
        built.keys.append(Key(role_key, plan.grantee, plan.revoke_key, len(built.grants)))
        built.grants.append((grantor, plan.grantee, plan.revoke_grant))
        if plan.revoke_grant:  # `calltrack role revoke`
            store.revoke_grant(role_ids[plan.role], ids[plan.grantee])
        else:
            active.add((plan.role, plan.grantee))
    for key in built.keys:
        if key.revoked:  # `calltrack key revoke KEY`
            store.revoke_key(store.find_key(key_hash=access.hash_key(key.text)).id)
    lines: dict[int, list[bytes]] = {}
    for number, (owner, when) in enumerate(world.calls):
        uid = f"{tag}-{number}"
        record = {"universalId": uid, "serviceType": "calltracking", "status": "success"}
        lines.setdefault(owner, []).append(msgspec.json.encode({**record, "callTime": TIMES[when]}))
        if FIRST <= TIMES[when] <= LAST:
            built.owned[owner].add(uid)
    for owner, records in lines.items():  # `calltrack import FILE --account A`
        import_bytes(store, ids[owner], b"\n".join(records), store.settings.zone)
    built.keys.append(Key(access.new_key(), 0))  # never issued
    built.keys[-1].revoked = True  # as unknown as a revoked key
    return built


def model(built: Built, key: Key, method: str) -> set[str] | None:
    """The calls ``key`` sees with ``method`` per section 3; None: "User is not recognized"."""
    if key.revoked or (key.grant is not None and built.grants[key.grant][2]):
        return None
    if (key.grant is not None) != (method == "getByRole"):
        return None  # a role key serves getByRole only; a user key everything else
    if method == "get":
        return set(built.owned[key.account])
    if method == "getByRole":
        assert key.grant is not None
        grantor = built.grants[key.grant][0]
        return set() if grantor == key.account else set(built.owned[grantor])
    # getWithRole: own calls and those of the grantor of every active grant to the account.
    # A grant is active until the grant is revoked; revoking its role key ends that key only.
    seen = set(built.owned[key.account])
    for grantor, grantee, revoked in built.grants:
        if grantee == key.account and not revoked:
            seen |= built.owned[grantor]
    return seen


def walk(http: TestClient, key: str, method: str) -> tuple[list[list[str]], str]:
    """The universalIds of every page in order, and the error that ended the walk."""
    pages: list[list[str]] = []
    for page in range(1000):  # a loop guard: no world here has 1000 pages
        answer = http.get(f"/api/?json/v3/{key}/call/{method}/{page}/{WINDOW}")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        if isinstance(body, dict):
            return pages, body["inbound"]["error"]
        assert {call["page"] for call in body} == {page}
        pages.append([call["universalId"] for call in body])
    raise AssertionError("the walk did not end")


@pytest.fixture
def served(make_client: MakeClient) -> tuple[TestClient, Store]:
    """One app and store for all examples of a test: each world is new accounts in it."""
    return make_client(page_size=PAGE_SIZE)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds())
@example(world=CHAIN)
def test_every_key_sees_through_every_method_exactly_what_section_3_allows(
    served: tuple[TestClient, Store], world: World
) -> None:
    http, store = served
    built = build(store, world)
    for key in built.keys:
        for method in METHODS:
            expected = model(built, key, method)
            pages, ended = walk(http, key.text, method)
            seen = [uid for page in pages for uid in page]
            where = f"{method} with {'role' if key.grant is not None else 'user'} key {key}"
            if expected is None:
                assert (pages, ended) == ([], NOT_RECOGNIZED), where
            elif not expected:
                assert (pages, ended) == ([], NO_ROWS), where
            else:
                assert sorted(seen) == sorted(expected), where  # no call twice, none missing
                assert ended == BAD_PAGE, where  # the page after the last is past the end
                assert [len(p) for p in pages[:-1]] == [PAGE_SIZE] * (len(pages) - 1), where
