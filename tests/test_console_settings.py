"""The console's settings page, on SQLite and PostgreSQL: each action changes the store as the
CLI would (and what it made works: a key on v4, a role key, a webhook's signature, a telephony
secret), secrets are shown once, every POST needs the session's CSRF token, role keys are
refused, another account's ids change nothing, and bad input is a 400 with its reason."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from calltrack import access
from calltrack.console import settings
from calltrack.console.i18n import LANGUAGES
from calltrack.console.session import LANGUAGE_COOKIE
from calltrack.store import Store
from calltrack.store.telephony import PROVIDERS
from tests.conftest import new_account
from tests.helpers_console import csrf_of, post_form, sign_in
from tests.test_hooks_delivery import (
    Receiver,
    Shop,
    always,
    delivering,
    first_fails,
    wait_until,
)

MakeClient = Callable[..., tuple[TestClient, Store]]
PAGE = "/console/settings"
HOSTILE = "<script>alert(1)</script>"
_SECRET = re.compile(r'<code id="secret" class="secret">([^<]+)</code>')
_URL = re.compile(r'<code id="secret-url" class="secret">([^<]+)</code>')
_PROBLEM = re.compile(r'<p class="problem"[^>]*>([^<]+)</p>')


@dataclass
class Signed:
    """An account signed in to the console with its first user key."""

    http: TestClient
    store: Store
    account: int
    key: str

    def post(self, path: str, **fields: str) -> Any:
        return post_form(self.http, path, PAGE, **fields)

    def page(self) -> str:
        answer = self.http.get(PAGE)
        assert answer.status_code == 200, answer.text
        return str(answer.text)


def signed_in(http: TestClient, store: Store, name: str = "shop") -> Signed:
    account, key = new_account(store, name)
    sign_in(http, key, PAGE)
    return Signed(http, store, account, key)


@pytest.fixture
def me(client: tuple[TestClient, Store]) -> Signed:
    return signed_in(*client)


def secret_of(text: str) -> str:
    found = _SECRET.search(text)
    assert found, "no secret shown"
    return html.unescape(found.group(1))


def problem_of(text: str) -> str:
    found = _PROBLEM.search(text)
    assert found, "no problem shown"
    return html.unescape(found.group(1))


def state(store: Store, account: int) -> tuple[object, ...]:
    """Everything the settings page may change of an account."""
    return (
        store.account_settings(account),
        store.list_keys(account),
        store.roles_of(account),
        store.hooks(account),
        store.telephony_endpoints(account),
    )


def v4_status(http: TestClient, key: str) -> int:
    answer = http.get("/api/v4/calls", headers={"authorization": f"Bearer {key}"})
    return int(answer.status_code)


# -- the page --------------------------------------------------------------------------------


def test_the_page_shows_the_accounts_settings_in_both_languages(me: Signed) -> None:
    text = me.page()
    assert 'value="180"' in text
    assert 'value="120"' in text
    assert me.key[:4] + "…" in text
    assert me.key not in text
    me.http.cookies.set(LANGUAGE_COOKIE, "ru", path="/console")
    text = me.page()
    assert "Настройки" in text
    assert "API-ключи" in text
    assert "<script>" not in re.sub(r'<script src="[^"]+" defer></script>', "", text)


def test_every_message_has_both_languages_and_every_provider_a_hint() -> None:
    for key, texts in settings.MESSAGES.items():
        assert key.startswith("settings."), key
        assert len(texts) == len(LANGUAGES), key
        assert all(text.strip() for text in texts), key
    for provider in PROVIDERS:
        assert f"settings.endpoint_{provider}_hint" in settings.MESSAGES


def test_a_visitor_not_signed_in_goes_to_sign_in(client: tuple[TestClient, Store]) -> None:
    http, _store = client
    answer = http.get(PAGE, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in?next=")


# -- unique and target ---------------------------------------------------------------------


def test_unique_days_and_target_seconds_are_saved(me: Signed) -> None:
    answer = me.post(PAGE + "/tracking", unique_days="30", target_seconds="45")
    assert answer.status_code == 303
    assert answer.headers["location"] == PAGE + "?done=saved#tracking"
    saved = me.store.account_settings(me.account)
    assert (saved.unique_days, saved.target_seconds) == (30, 45)
    text = me.http.get(answer.headers["location"]).text
    assert "Saved." in text
    assert 'value="30"' in text


@pytest.mark.parametrize(
    ("unique", "target", "reason"),
    [
        ("x", "10", "Unique days"),
        ("-1", "10", "Unique days"),
        ("3651", "10", "Unique days"),
        ("", "10", "Unique days"),
        ("1.5", "10", "Unique days"),
        ("10", "86401", "Target seconds"),
        ("10", "ten", "Target seconds"),
    ],
)
def test_bad_unique_days_or_target_seconds_are_400_and_change_nothing(
    me: Signed, unique: str, target: str, reason: str
) -> None:
    before = state(me.store, me.account)
    answer = me.post(PAGE + "/tracking", unique_days=unique, target_seconds=target)
    assert answer.status_code == 400
    assert problem_of(answer.text).startswith(reason)
    assert state(me.store, me.account) == before


# -- keys ------------------------------------------------------------------------------------


def test_an_issued_key_works_on_v4_and_is_shown_only_once(me: Signed) -> None:
    answer = me.post(PAGE + "/keys/issue")
    assert answer.status_code == 200
    key = secret_of(answer.text)
    assert access.is_well_formed(key)
    assert key != me.key
    assert 'data-copy="secret"' in answer.text
    assert v4_status(me.http, key) == 200
    assert [k.hint for k in me.store.list_keys(me.account)] == [me.key[:4], key[:4]]
    assert key not in me.page()


def test_a_revoked_key_is_refused_by_v4(me: Signed) -> None:
    other = access.issue_user_key(me.store, me.account)
    assert v4_status(me.http, other) == 200
    key_id = me.store.find_key(key_hash=access.hash_key(other)).id
    answer = me.post(f"{PAGE}/keys/{key_id}/revoke")
    assert answer.status_code == 303
    assert answer.headers["location"] == PAGE + "?done=key_revoked#keys"
    assert v4_status(me.http, other) == 401
    assert v4_status(me.http, me.key) == 200
    assert me.page()  # the session goes on


def test_revoking_ones_own_key_ends_the_session(me: Signed) -> None:
    text = me.page()
    assert "the one you are signed in with" in text
    assert "only active user key" in text  # the account has no other
    own = me.store.list_keys(me.account)[0].id
    answer = me.post(f"{PAGE}/keys/{own}/revoke")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in"
    assert me.store.list_keys(me.account)[0].revoked_at is not None
    again = me.http.get(PAGE, follow_redirects=False)
    assert again.status_code == 303
    assert again.headers["location"].startswith("/console/sign-in")
    assert v4_status(me.http, me.key) == 401


# -- roles -----------------------------------------------------------------------------------


def test_a_granted_role_key_opens_the_grantors_calls_until_the_grant_is_revoked(
    me: Signed,
) -> None:
    grantee, _grantee_key = new_account(me.store, "agency")
    answer = me.post(PAGE + "/roles/add", name="viewer")
    assert answer.status_code == 303
    [(role, grants)] = me.store.roles_of(me.account).granted
    assert (role.name, grants) == ("viewer", [])
    answer = me.post(f"{PAGE}/roles/{role.id}/grant", grantee="agency")
    assert answer.status_code == 200
    role_key = secret_of(answer.text)
    assert "agency" in answer.text
    resolved = access.resolve(me.store, role_key)
    assert (resolved.account_id, resolved.grantor_id) == (grantee, me.account)
    assert v4_status(me.http, role_key) == 200
    assert role_key not in me.page()
    [(_role, [grant])] = me.store.roles_of(me.account).granted
    assert grant.account_id == grantee
    assert grant.revoked_at is None

    answer = me.post(f"{PAGE}/grants/{grant.id}/revoke")
    assert answer.status_code == 303
    assert answer.headers["location"] == PAGE + "?done=grant_revoked#roles"
    assert v4_status(me.http, role_key) == 401
    [(_role, [grant])] = me.store.roles_of(me.account).granted
    assert grant.revoked_at is not None


def test_a_grant_by_account_id_works_too(me: Signed) -> None:
    grantee, _ = new_account(me.store, "agency")
    role = me.store.create_role(me.account, "viewer")
    answer = me.post(f"{PAGE}/roles/{role.id}/grant", grantee=str(grantee))
    assert answer.status_code == 200
    assert access.resolve(me.store, secret_of(answer.text)).account_id == grantee


@pytest.mark.parametrize(
    ("grantee", "reason"),
    [
        ("nobody", "No account is named so"),
        ("", "No account is named so"),
        ("shop", "A role granted to its own account opens nothing"),
        ("agency", "already granted"),
    ],
)
def test_a_bad_grant_is_400_and_changes_nothing(me: Signed, grantee: str, reason: str) -> None:
    other, _ = new_account(me.store, "agency")
    role = me.store.create_role(me.account, "viewer")
    me.store.create_grant(role.id, other)
    before = state(me.store, me.account), state(me.store, other)
    answer = me.post(f"{PAGE}/roles/{role.id}/grant", grantee=grantee)
    assert answer.status_code == 400
    assert reason in problem_of(answer.text)
    assert (state(me.store, me.account), state(me.store, other)) == before


@pytest.mark.parametrize(
    ("name", "reason"),
    [("", "needs a name"), ("  ", "needs a name"), ("x" * 201, "needs a name"),
     ("viewer", "already has a role")],
)  # fmt: skip
def test_a_bad_role_name_is_400_and_changes_nothing(me: Signed, name: str, reason: str) -> None:
    me.store.create_role(me.account, "viewer")
    before = state(me.store, me.account)
    answer = me.post(PAGE + "/roles/add", name=name)
    assert answer.status_code == 400
    assert reason in problem_of(answer.text)
    assert state(me.store, me.account) == before


# -- webhooks --------------------------------------------------------------------------------


def test_a_webhook_is_added_listed_tested_and_its_secret_shown_once(
    make_client: MakeClient,
) -> None:
    me = signed_in(*make_client(hooks_allow_hosts="127.0.0.1"))
    with Receiver(always(200)) as receiver:
        answer = me.post(
            PAGE + "/hooks/add",
            url=receiver.url,
            method="PUT",
            event_AFTER_CALL_FINISH="1",
            event_CALL_UPDATED="1",
        )
        assert answer.status_code == 200
        secret = secret_of(answer.text)
        assert secret.startswith("whsec_")
        [hook] = me.store.hooks(me.account)
        assert (hook.url, hook.method, hook.events) == (
            receiver.url, "PUT", ("AFTER_CALL_FINISH", "CALL_UPDATED"),
        )  # fmt: skip
        text = me.page()
        assert receiver.url in text
        assert secret not in text

        answer = me.post(f"{PAGE}/hooks/{hook.id}/test")
        assert answer.status_code == 200
        assert "answered 200" in answer.text
        [hit] = receiver.requests()
    hit.verify(secret)  # signed as deliveries are, with the secret shown
    assert hit.method == "PUT"
    assert hit.event == "AFTER_CALL_FINISH"
    assert hit.call_id.startswith("test-")
    assert me.store.hook_log(hook.id) == []  # a test is not recorded


def test_a_test_without_an_answer_says_so(make_client: MakeClient) -> None:
    me = signed_in(*make_client(hooks_allow_hosts="127.0.0.1"))
    with Receiver(always(500)) as receiver:
        hook = me.store.add_hook(me.account, receiver.url, ["AFTER_CALL_FINISH"]).endpoint
        answer = me.post(f"{PAGE}/hooks/{hook.id}/test")
    assert answer.status_code == 200
    assert "answered 500" in answer.text
    assert 'class="tested bad"' in answer.text


def test_the_log_shows_attempts_and_a_disabled_webhook_is_enabled_again(
    make_client: MakeClient,
) -> None:
    http, store = make_client(hooks_allow_hosts="127.0.0.1", hooks_schedule="0.1,0.1,0.1")
    shop = Shop(store)
    key = access.issue_user_key(store, shop.account)
    sign_in(http, key, PAGE)
    me = Signed(http, store, shop.account, key)
    with Receiver(first_fails(503)) as receiver:
        hook = shop.hook(receiver.url, ["AFTER_CALL_FINISH"]).endpoint
        call = shop.call()
        with delivering(store):
            receiver.wait_for(1)
            wait_until(lambda: len(store.hook_log(hook.id)) == 2, "both attempts logged")
    log = http.get(f"{PAGE}/hooks/{hook.id}/log")
    assert log.status_code == 200
    assert call in log.text
    assert ">503<" in log.text
    assert ">200<" in log.text

    with store._live_transaction() as conn:  # as a 410 from the receiver leaves it
        conn.execute(
            "UPDATE hook_endpoints SET enabled = 0, disabled_reason = ? WHERE id = ?",
            ("the receiver answered 410 Gone", hook.id),
        )
    text = me.page()
    assert "disabled: the receiver answered 410 Gone" in text
    assert f"/hooks/{hook.id}/enable" in text
    answer = me.post(f"{PAGE}/hooks/{hook.id}/enable")
    assert answer.status_code == 303
    assert store.hook(hook.id).enabled
    answer = me.post(f"{PAGE}/hooks/{hook.id}/remove")
    assert answer.status_code == 303
    assert store.hooks(shop.account) == []


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"url": "http://example.com/hook"}, "plain http is allowed only"),
        ({"url": "https://10.0.0.1/hook"}, "private or reserved address"),
        ({"url": "ftp://example.com/"}, "expected an http(s) URL"),
        ({"url": "https://u:p@93.184.216.34/"}, "credentials"),
        ({"url": "https://93.184.216.34/" + "x" * 2000}, "longer than"),
        ({"url": "https://93.184.216.34/", "event_AFTER_CALL_FINISH": ""}, "at least one"),
        ({"url": "https://93.184.216.34/", "method": "PATCH"}, "method"),
    ],
)
def test_a_bad_webhook_is_400_with_its_reason_and_changes_nothing(
    me: Signed, fields: dict[str, str], reason: str
) -> None:
    form = {"method": "POST", "event_AFTER_CALL_FINISH": "1", **fields}
    before = state(me.store, me.account)
    answer = me.post(PAGE + "/hooks/add", **form)
    assert answer.status_code == 400
    assert reason in problem_of(answer.text)
    assert state(me.store, me.account) == before
    assert html.escape(fields["url"][:60]) in answer.text  # the form keeps what was typed


# -- telephony -------------------------------------------------------------------------------


def test_a_telephony_endpoint_takes_events_with_its_secret_until_revoked(me: Signed) -> None:
    answer = me.post(PAGE + "/telephony/add", provider="generic")
    assert answer.status_code == 200
    secret = secret_of(answer.text)
    urls = _URL.findall(answer.text)
    assert urls == ["http://testserver/telephony/generic"]
    [endpoint] = me.store.telephony_endpoints(me.account)
    assert (endpoint.provider, endpoint.hint) == ("generic", secret[:4])
    assert secret not in me.page()

    def post_events() -> int:
        events = [{"event": "call.started", "call_id": "c1", "at": int(time.time()) - 5,
                   "caller": "79161234567", "called": "74950000001"}]  # fmt: skip
        headers = {"authorization": f"Bearer {secret}"}
        posted = me.http.post(
            "/telephony/generic", content=msgspec.json.encode(events), headers=headers
        )
        return int(posted.status_code)

    assert post_events() == 200
    answer = me.post(f"{PAGE}/telephony/{endpoint.id}/revoke")
    assert answer.status_code == 303
    assert me.store.telephony_endpoints(me.account)[0].revoked_at is not None
    assert post_events() == 401


def test_a_zadarma_endpoint_shows_its_own_url(me: Signed) -> None:
    answer = me.post(PAGE + "/telephony/add", provider="zadarma")
    assert answer.status_code == 200
    [endpoint] = me.store.telephony_endpoints(me.account)
    assert _URL.findall(answer.text) == [f"http://testserver/telephony/zadarma/{endpoint.endpoint}"]
    assert endpoint.signing_secret == secret_of(answer.text)


def test_an_unknown_provider_is_400(me: Signed) -> None:
    before = state(me.store, me.account)
    answer = me.post(PAGE + "/telephony/add", provider="asterisk")
    assert answer.status_code == 400
    assert "provider" in problem_of(answer.text)
    assert state(me.store, me.account) == before


# -- who may do what -------------------------------------------------------------------------


@dataclass
class Objects:
    """An account's key, role, grant, webhook and telephony endpoint: their ids."""

    key: int
    role: int
    grant: int
    hook: int
    endpoint: int

    def posts(self) -> list[tuple[str, dict[str, str]]]:
        """Every POST of the settings page, on these objects, with valid fields."""
        return [
            (PAGE + "/tracking", {"unique_days": "1", "target_seconds": "1"}),
            (PAGE + "/keys/issue", {}),
            (f"{PAGE}/keys/{self.key}/revoke", {}),
            (PAGE + "/roles/add", {"name": "another"}),
            (f"{PAGE}/roles/{self.role}/grant", {"grantee": "third"}),
            (f"{PAGE}/grants/{self.grant}/revoke", {}),
            (PAGE + "/hooks/add", {"url": "https://93.184.216.34/h", "event_CALL_UPDATED": "1"}),
            (f"{PAGE}/hooks/{self.hook}/test", {}),
            (f"{PAGE}/hooks/{self.hook}/enable", {}),
            (f"{PAGE}/hooks/{self.hook}/remove", {}),
            (PAGE + "/telephony/add", {"provider": "generic"}),
            (f"{PAGE}/telephony/{self.endpoint}/revoke", {}),
        ]


def objects_of(store: Store, account: int, grantee: int) -> Objects:
    key = store.find_key(key_hash=access.hash_key(access.issue_user_key(store, account))).id
    role = store.create_role(account, "viewer")
    grant = store.create_grant(role.id, grantee)
    access.issue_role_key(store, grant)
    hook = store.add_hook(account, "https://93.184.216.34/hook", ["AFTER_CALL_FINISH"])
    endpoint = store.add_telephony_endpoint(account, "generic")
    return Objects(key, role.id, grant.id, hook.endpoint.id, endpoint.endpoint.id)


def test_the_tests_walk_every_post_route() -> None:
    walked = {re.sub(r"/\d+/", "/{id}/", path) for path, _ in Objects(1, 2, 3, 4, 5).posts()}
    posts = {
        r.path for r in settings.routes() if isinstance(r, Route) and "POST" in (r.methods or ())
    }
    assert walked == posts


def test_a_post_without_the_csrf_token_or_with_another_is_403_and_changes_nothing(
    me: Signed,
) -> None:
    new_account(me.store, "third")
    mine = objects_of(me.store, me.account, new_account(me.store, "agency")[0])
    before = state(me.store, me.account)
    stranger = TestClient(me.http.app)
    signed_in(stranger, me.store, "stranger")
    wrong = csrf_of(stranger.get(PAGE).text)
    assert wrong != csrf_of(me.page())
    for path, fields in mine.posts():
        for token in ({}, {"csrf": wrong}, {"csrf": ""}):
            answer = me.http.post(path, data={**fields, **token}, follow_redirects=False)
            assert answer.status_code == 403, path
            assert "nothing was changed" in answer.text
    assert state(me.store, me.account) == before


def test_a_role_key_gets_403_on_every_settings_route(me: Signed) -> None:
    agency, _ = new_account(me.store, "agency")
    new_account(me.store, "third")
    role = me.store.create_role(me.account, "reader")
    role_key = access.issue_role_key(me.store, me.store.create_grant(role.id, agency))
    mine = objects_of(me.store, me.account, agency)
    before = state(me.store, me.account), state(me.store, agency)
    reader = TestClient(me.http.app)
    sign_in(reader, role_key)
    overview = reader.get("/console/")
    assert overview.status_code == 200
    assert 'href="/console/settings"' not in overview.text
    token = csrf_of(overview.text)  # the role session's own, valid token
    for path in (PAGE, f"{PAGE}/hooks/{mine.hook}/log", PAGE + "/keys/issue"):
        answer = reader.get(path, follow_redirects=False)
        assert answer.status_code == 403, path
        assert "settings need a user key" in answer.text
    for path, fields in mine.posts():
        answer = reader.post(path, data={**fields, "csrf": token}, follow_redirects=False)
        assert answer.status_code == 403, path
    assert (state(me.store, me.account), state(me.store, agency)) == before


def test_ids_of_another_accounts_objects_are_not_found_and_change_nothing(me: Signed) -> None:
    other, _ = new_account(me.store, "other")
    grantee, _ = new_account(me.store, "third")
    theirs = objects_of(me.store, other, grantee)
    before = state(me.store, me.account), state(me.store, other), state(me.store, grantee)
    for path, fields in theirs.posts():
        if not re.search(r"/\d+/", path):
            continue
        answer = me.post(path, **fields)
        assert answer.status_code == 404, path
        assert "has nothing with that id" in problem_of(answer.text)
    for path in (f"{PAGE}/keys/99999/revoke", f"{PAGE}/hooks/x/test", f"{PAGE}/roles/1e3/grant",
                 f"{PAGE}/grants/{'9' * 30}/revoke", f"{PAGE}/telephony/-1/revoke"):  # fmt: skip
        assert me.post(path).status_code == 404, path
    log = me.http.get(f"{PAGE}/hooks/{theirs.hook}/log")
    assert log.status_code == 404
    assert "https://93.184.216.34/hook" not in log.text
    after = state(me.store, me.account), state(me.store, other), state(me.store, grantee)
    assert after == before


def test_hostile_names_and_urls_are_escaped(make_client: MakeClient) -> None:
    http, store = make_client(hooks_allow_hosts="127.0.0.1")
    me = signed_in(http, store, HOSTILE)
    new_account(store, HOSTILE + "2")
    assert me.post(PAGE + "/roles/add", name=HOSTILE).status_code == 303
    [(role, _)] = store.roles_of(me.account).granted
    granted = me.post(f"{PAGE}/roles/{role.id}/grant", grantee=HOSTILE + "2")
    assert granted.status_code == 200
    url = "http://127.0.0.1:9/" + HOSTILE
    assert me.post(PAGE + "/hooks/add", url=url, event_CALL_UPDATED="1").status_code == 200
    bad = me.post(PAGE + "/roles/add", name=HOSTILE)  # the name is taken: the form comes back
    for text in (me.page(), granted.text, bad.text):
        assert "<script>alert" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
