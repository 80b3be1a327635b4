"""The admin CLI, driven as a user would: accounts, keys, roles, import, demo, and its errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from calltrack.api.app import create_app
from calltrack.cli import main
from calltrack.config import Settings
from calltrack.demo import cli_command
from calltrack.store import Store, open_store
from tests.faults._common import free_port
from tests.helpers_calls import jsonl, record, seen_ids

CALLTRACK = Path(sys.executable).parent / "calltrack"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'x.db'}"


def run(db: str, *args: str) -> Result:
    """One CLI run against ``db``; an exception other than the CLI's own exit fails the test."""
    return CliRunner().invoke(main, ["--database", db, *args], catch_exceptions=False)


def ok(db: str, *args: str) -> dict[str, Any]:
    """Run a command with --json; it must succeed; its last line of output, decoded."""
    result = run(db, *args, "--json")
    assert result.exit_code == 0, result.output
    decoded: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return decoded


def failed(db: str, *args: str) -> str:
    """Run a command that must fail the documented way; its stderr."""
    result = run(db, *args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    return result.stderr


@contextmanager
def api_over(db: str) -> Iterator[TestClient]:
    """The API in-process over the database the CLI wrote to."""
    settings = Settings.from_env(env={}, database_url=db)
    store = open_store(settings)
    with TestClient(create_app(settings, store)) as http:
        yield http


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# -- accounts --------------------------------------------------------------------------------


def test_account_add_prints_id_name_and_a_16_character_key_as_json(db: str) -> None:
    created = ok(db, "account", "add", "acme")
    assert list(created) == ["id", "name", "api_key"]
    assert isinstance(created["id"], int)
    assert created["name"] == "acme"
    assert len(created["api_key"]) == 16
    assert created["api_key"].isalnum()
    assert created["api_key"] == created["api_key"].lower()


def test_account_add_without_json_shows_the_key_in_a_sentence(db: str) -> None:
    result = run(db, "account", "add", "acme")
    assert result.exit_code == 0
    assert "'acme' created" in result.stdout


def test_a_duplicate_account_name_is_refused(db: str) -> None:
    ok(db, "account", "add", "acme")
    assert failed(db, "account", "add", "acme") == "error: account 'acme' already exists\n"


def test_an_empty_account_name_is_refused(db: str) -> None:
    assert failed(db, "account", "add", "  ") == "error: the account name is empty\n"


def test_account_list_counts_each_accounts_calls(db: str, tmp_path: Path) -> None:
    ok(db, "account", "add", "acme")
    ok(db, "account", "add", "other")
    ok(db, "import", write(tmp_path / "c.jsonl", jsonl([record("1")])), "--account", "acme")
    listed = ok(db, "account", "list")["accounts"]
    assert [(a["name"], a["calls"]) for a in listed] == [("acme", 1), ("other", 0)]


def test_a_count_of_one_is_singular_in_the_text_output(db: str, tmp_path: Path) -> None:
    ok(db, "account", "add", "acme")
    path = write(tmp_path / "c.jsonl", jsonl([record("1")]))
    assert run(db, "import", path, "--account", "acme").stdout == (
        "1 call imported, 0 updated into 'acme'\n"
    )
    assert run(db, "account", "list").stdout.endswith("  acme  (1 call)\n")


@pytest.mark.parametrize(
    "command",
    [["key", "issue", "nobody"], ["key", "list", "nobody"], ["role", "add", "nobody", "r"]],
    ids=" ".join,
)
def test_an_unknown_account_is_an_error(db: str, command: list[str]) -> None:
    assert failed(db, *command) == "error: no account 'nobody'\n"


# -- keys ------------------------------------------------------------------------------------


def test_key_issue_gives_another_working_key_of_the_account(db: str, tmp_path: Path) -> None:
    created = ok(db, "account", "add", "acme")
    ok(db, "import", write(tmp_path / "c.jsonl", jsonl([record("1")])), "--account", "acme")
    issued = ok(db, "key", "issue", "acme")
    assert issued["account_id"] == created["id"]
    assert len(issued["api_key"]) == 16
    assert issued["api_key"] != created["api_key"]
    with api_over(db) as http:
        assert seen_ids(http, issued["api_key"], "get") == ["1"]
        assert seen_ids(http, created["api_key"], "get") == ["1"]


def test_key_issue_accepts_the_account_id(db: str) -> None:
    created = ok(db, "account", "add", "acme")
    assert ok(db, "key", "issue", str(created["id"]))["account_id"] == created["id"]


@pytest.mark.parametrize("by", ["key", "id"])
def test_key_revoke_by_key_or_by_id_stops_that_key_only(db: str, tmp_path: Path, by: str) -> None:
    first = ok(db, "account", "add", "acme")["api_key"]
    second = ok(db, "key", "issue", "acme")["api_key"]
    ok(db, "import", write(tmp_path / "c.jsonl", jsonl([record("1")])), "--account", "acme")
    keys = ok(db, "key", "list", "acme")["keys"]
    first_id = next(k["id"] for k in keys if k["hint"] == first[:4])

    revoked = ok(db, "key", "revoke", first if by == "key" else str(first_id))

    assert revoked == {"id": first_id, "revoked": True}
    with api_over(db) as http:
        assert seen_ids(http, first, "get") == "User is not recognized"
        assert seen_ids(http, second, "get") == ["1"]


def test_key_list_shows_kind_and_revoked_state_and_never_a_full_key(db: str) -> None:
    ok(db, "account", "add", "owner")
    user_key = ok(db, "account", "add", "acme")["api_key"]
    spare_key = ok(db, "key", "issue", "acme")["api_key"]
    role_id = ok(db, "role", "add", "owner", "reports")["id"]
    role_key = ok(db, "role", "grant", str(role_id), "acme")["api_key"]
    ok(db, "key", "revoke", spare_key)

    as_json = run(db, "key", "list", "acme", "--json")
    as_text = run(db, "key", "list", "acme")

    keys = json.loads(as_json.stdout)["keys"]
    assert [(k["hint"], k["kind"], k["revoked"]) for k in keys] == [
        (user_key[:4], "user", False),
        (spare_key[:4], "user", True),
        (role_key[:4], "role", False),
    ]
    lines = as_text.stdout.splitlines()
    assert [line.split()[1:] for line in lines] == [
        [f"{user_key[:4]}...", "user", "active"],
        [f"{spare_key[:4]}...", "user", "revoked"],
        [f"{role_key[:4]}...", "role", "active"],
    ]
    for key in (user_key, spare_key, role_key):
        for shown in (as_json.output, as_text.output):
            assert key[:5] not in shown


@pytest.mark.parametrize("ref", ["aaaaaaaaaaaaaaaa", "999", "not-a-key"])
def test_revoking_an_unknown_key_is_an_error(db: str, ref: str) -> None:
    ok(db, "account", "add", "acme")
    assert failed(db, "key", "revoke", ref).startswith("error: ")


# -- roles -----------------------------------------------------------------------------------


def test_role_add_grant_and_revoke_control_what_the_role_key_sees(db: str, tmp_path: Path) -> None:
    ok(db, "account", "add", "owner")
    grantee_key = ok(db, "account", "add", "agency")["api_key"]
    ok(db, "import", write(tmp_path / "o.jsonl", jsonl([record("1")])), "--account", "owner")
    ok(db, "import", write(tmp_path / "a.jsonl", jsonl([record("2")])), "--account", "agency")

    role_id = ok(db, "role", "add", "owner", "reports")["id"]
    granted = ok(db, "role", "grant", str(role_id), "agency")
    assert len(granted["api_key"]) == 16
    with api_over(db) as http:
        assert seen_ids(http, granted["api_key"], "getByRole") == ["1"]
        assert seen_ids(http, grantee_key, "getWithRole") == ["1", "2"]

    assert ok(db, "role", "revoke", str(role_id), "agency") == {
        "grant_id": granted["grant_id"],
        "revoked": True,
    }
    with api_over(db) as http:
        assert seen_ids(http, granted["api_key"], "getByRole") == "User is not recognized"
        assert seen_ids(http, grantee_key, "getWithRole") == ["2"]


def test_role_errors_are_reported_not_raised(db: str) -> None:
    ok(db, "account", "add", "owner")
    ok(db, "account", "add", "agency")
    role_id = str(ok(db, "role", "add", "owner", "reports")["id"])
    assert "already has a role" in failed(db, "role", "add", "owner", "reports")
    assert failed(db, "role", "grant", "999", "agency") == "error: no role 999\n"
    assert "not granted" in failed(db, "role", "revoke", role_id, "agency")
    ok(db, "role", "grant", role_id, "agency")
    assert "already granted" in failed(db, "role", "grant", role_id, "agency")


def test_role_list_shows_both_sides_with_ids_and_states_on_both_backends(
    make_store: Callable[..., Store],
) -> None:
    database = make_store().settings.database_url
    owner_id = ok(database, "account", "add", "owner")["id"]
    agency_id = ok(database, "account", "add", "agency")["id"]
    other_id = ok(database, "account", "add", "other")["id"]
    reports = ok(database, "role", "add", "owner", "reports")["id"]
    audit = ok(database, "role", "add", "owner", "audit")["id"]
    theirs = ok(database, "role", "add", "other", "shared")["id"]
    to_agency = ok(database, "role", "grant", str(reports), "agency")["grant_id"]
    to_other = ok(database, "role", "grant", str(reports), "other")["grant_id"]
    ok(database, "role", "revoke", str(reports), "other")
    received = ok(database, "role", "grant", str(theirs), "owner")["grant_id"]

    listed = ok(database, "role", "list", "owner")

    assert listed == {
        "account_id": owner_id,
        "granted": [
            {
                "role_id": reports,
                "name": "reports",
                "grants": [
                    {"grant_id": to_agency, "grantee_id": agency_id, "grantee": "agency",
                     "revoked": False},
                    {"grant_id": to_other, "grantee_id": other_id, "grantee": "other",
                     "revoked": True},
                ],
            },
            {"role_id": audit, "name": "audit", "grants": []},
        ],
        "received": [
            {"role_id": theirs, "name": "shared", "grantor_id": other_id, "grantor": "other",
             "grant_id": received, "revoked": False},
        ],
    }  # fmt: skip
    agency = ok(database, "role", "list", str(agency_id))
    assert agency["granted"] == []
    assert [(r["role_id"], r["grantor"], r["grant_id"]) for r in agency["received"]] == [
        (reports, "owner", to_agency)
    ]
    text = run(database, "role", "list", "owner").stdout.splitlines()
    assert text == [
        "roles 'owner' granted:",
        f"  role {reports} 'reports'",
        f"    grant {to_agency} to 'agency' (account {agency_id}): active",
        f"    grant {to_other} to 'other' (account {other_id}): revoked",
        f"  role {audit} 'audit': no grant",
        "roles granted to 'owner':",
        f"  role {theirs} 'shared' of 'other' (account {other_id}): grant {received}, active",
    ]
    assert failed(database, "role", "list", "nobody") == "error: no account 'nobody'\n"


def test_role_list_of_an_account_without_roles_says_so(db: str) -> None:
    ok(db, "account", "add", "alone")
    assert run(db, "role", "list", "alone").stdout.splitlines() == [
        "'alone' granted no role",
        "no role granted to 'alone'",
    ]


# -- import ----------------------------------------------------------------------------------


def test_import_reports_imported_then_updated(db: str, tmp_path: Path) -> None:
    ok(db, "account", "add", "acme")
    path = write(tmp_path / "calls.jsonl", jsonl([record("1"), record("2")]))
    assert ok(db, "import", path, "--account", "acme") == {"imported": 2, "updated": 0}
    assert ok(db, "import", path, "--account", "acme") == {"imported": 0, "updated": 2}


def test_a_bad_import_file_names_its_line_on_stderr_and_imports_nothing(
    db: str, tmp_path: Path
) -> None:
    ok(db, "account", "add", "acme")
    path = write(tmp_path / "bad.jsonl", jsonl([record("1"), record("2", serviceType="sms")]))
    message = failed(db, "import", path, "--account", "acme")
    assert message.startswith("error: line 2: ")
    assert "serviceType" in message
    assert ok(db, "account", "list")["accounts"][0]["calls"] == 0


def test_importing_into_an_unknown_account_is_an_error(db: str, tmp_path: Path) -> None:
    path = write(tmp_path / "calls.jsonl", jsonl([record("1")]))
    assert failed(db, "import", path, "--account", "nobody") == "error: no account 'nobody'\n"


def test_importing_a_missing_file_is_an_error(db: str, tmp_path: Path) -> None:
    ok(db, "account", "add", "acme")
    message = failed(db, "import", str(tmp_path / "missing.jsonl"), "--account", "acme")
    assert message == f"error: no such file: {tmp_path / 'missing.jsonl'}\n"


# -- the database ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://localhost/calls", "CALLTRACK_DATABASE_URL"),
        ("sqlite:///", "CALLTRACK_DATABASE_URL"),
        ("sqlite:////nonexistent-dir/calls.db", "not reachable"),
    ],
)
def test_a_bad_database_url_is_an_error(url: str, words: str) -> None:
    assert words in failed(url, "account", "list")


# -- demo ------------------------------------------------------------------------------------


def test_demo_creates_three_accounts_and_prints_requests_and_keys_that_answer(db: str) -> None:
    shown = ok(db, "demo", "--no-serve", "--calls", "300")
    assert shown["imported"] == 300
    assert sorted(shown["keys"]) == ["demo-agency", "demo-clinic", "demo-dealer"]
    methods = [e["method"] for e in shown["examples"]]
    assert methods == ["get", "getByRole", "getByRole", "getWithRole"]
    counts = {a["name"]: a["calls"] for a in ok(db, "account", "list")["accounts"]}
    assert sum(counts.values()) == 300

    with api_over(db) as http:
        answers = [http.get(e["path"]) for e in shown["examples"]]
        assert [a.status_code for a in answers] == [200] * 4
        sizes = [len(a.json()) for a in answers]
        assert sizes == [counts["demo-dealer"], counts["demo-dealer"], counts["demo-clinic"], 300]
        window = shown["examples"][0]["path"].split("/call/get/")[1]
        for name, key in shown["keys"].items():
            answer = http.get(f"/api/?json/v3/{key}/call/get/{window}")
            assert answer.status_code == 200
            assert len(answer.json()) == counts[name], name


def test_demo_ends_on_the_console_that_its_printed_key_signs_in_to(db: str) -> None:
    from tests.helpers_console import sign_in

    text = run(db, "demo", "--no-serve", "--calls", "300").stdout.rstrip().splitlines()
    assert text[-1].strip() == "/console/"  # the last line: where a newcomer goes
    shown = ok(db, "demo", "--no-serve", "--calls", "300")  # new keys for the same calls
    console = shown["console"]
    assert console["sign_in_key"] == shown["keys"]["demo-dealer"]
    assert re.search(r"sign in with demo-dealer's key [a-z0-9]{16} ", text[-2]), text[-2]
    with api_over(db) as http:
        sign_in(http, console["sign_in_key"], console["path"] + "?period=30d")
        page = http.get(console["path"], params={"period": "30d"})
        assert page.status_code == 200
        assert "Account demo-dealer" in page.text
        assert 'id="chart-data"' in page.text  # the demo's calls reach today


def test_each_demo_role_key_shows_exactly_the_calls_its_label_names(db: str) -> None:
    first = ok(db, "demo", "--no-serve", "--calls", "300")
    window = first["examples"][0]["path"].split("/call/get/0/")[1]

    def seen(http: TestClient, key: str, method: str) -> list[str] | str:
        body = http.get(f"/api/?json/v3/{key}/call/{method}/0/{window}").json()
        if isinstance(body, dict):
            return str(body["inbound"]["error"])
        return sorted(call["universalId"] for call in body)

    with api_over(db) as http:
        owned = {name: seen(http, key, "get") for name, key in first["keys"].items()}
        assert sorted(len(ids) for ids in owned.values()) == [45, 105, 150]
        assert [r["grantee"] for r in first["role_keys"]] == ["demo-agency"] * 2
        for role_key in first["role_keys"]:
            assert role_key["shows"].startswith(f"{role_key['grantor']}'s calls only ")
            assert seen(http, role_key["api_key"], "getByRole") == owned[role_key["grantor"]]

    text = run(db, "demo", "--no-serve").stdout.splitlines()  # new keys for the same calls
    start = text.index("Role keys of demo-agency for getByRole (shown only now), one per grant:")
    with api_over(db) as http:
        labelled = []
        for line in text[start + 1 : start + 3]:  # "  KEY  demo-dealer's calls only (...)"
            key, whose, *label = line.split()
            assert label[:2] == ["calls", "only"], line
            labelled.append(whose.removesuffix("'s"))
            assert seen(http, key, "getByRole") == owned[labelled[-1]], line
        assert labelled == ["demo-dealer", "demo-clinic"]
        for role_key in first["role_keys"]:  # the second run revoked the grants of the first
            assert seen(http, role_key["api_key"], "getByRole") == "User is not recognized"


def test_demo_calls_come_from_sites_of_their_accounts_business(db: str) -> None:
    from calltrack.demo import DEMO_ACCOUNTS

    shown = ok(db, "demo", "--no-serve", "--calls", "600")
    declared = {demo.name: {site for site, _phrase in demo.sites} for demo in DEMO_ACCOUNTS}
    assert {"autosalon-kaluga.ru"} <= declared["demo-dealer"]
    assert {"dental-smile.ru"} <= declared["demo-clinic"]
    with api_over(db) as http:
        for name, key in shown["keys"].items():
            window = shown["examples"][0]["path"].split("/call/get/0/")[1]
            calls = http.get(f"/api/?json/v3/{key}/call/get/0/{window}").json()
            sites = {call["site"] for call in calls} - {""}
            assert sites == declared[name], name
            hosts = {urlsplit(call["entryPoint"]).hostname for call in calls} - {None}
            assert {host.removeprefix("m.") for host in hosts if host} <= declared[name]


def test_demo_without_serving_prints_how_to_serve_and_no_url(db: str) -> None:
    result = run(db, "demo", "--no-serve", "--calls", "30", "--port", "8123")
    assert result.exit_code == 0, result.output
    assert "http" not in result.stdout
    serve = f"{cli_command()} --database {db} serve --port 8123"
    assert f"Nothing is served (--no-serve). To serve: {serve}\n" in result.stdout
    shown = ok(db, "demo", "--no-serve", "--port", "8123")
    assert shown["serve"] == serve
    assert all("url" not in example for example in shown["examples"])


def test_demo_serves_the_urls_it_prints(db: str) -> None:
    port = free_port()
    command = [str(CALLTRACK), "--database", db, "demo", "--calls", "30", "--port", str(port)]
    with subprocess.Popen(
        [*command, "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as demo:
        try:
            assert demo.stdout is not None
            shown = json.loads(demo.stdout.readline())
            assert "serve" not in shown
            sizes = []
            for example in shown["examples"]:
                assert example["url"] == f"http://127.0.0.1:{port}{example['path']}"
                sizes.append(len(json.loads(fetch(example["url"]))))
            assert sizes == [15, 15, 10, 30]  # shares of 30 calls: dealer, clinic, all three
        finally:
            demo.terminate()


def fetch(url: str) -> bytes:
    """The body of a GET, waiting up to 30 s for a server that is starting."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body: bytes = answer.read()
                return body
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_demo_says_how_to_run_the_cli_and_that_command_runs(db: str) -> None:
    result = run(db, "demo", "--no-serve", "--calls", "30")
    line = next(line for line in result.stdout.splitlines() if "admin CLI" in line)
    command = line.split()[3]  # "The admin CLI: COMMAND --help  (or `source ...` ...)"
    assert Path(command).resolve() == CALLTRACK.resolve()
    activate = line.split("(or `source ")[1].split("`")[0]
    assert Path(activate).resolve() == (CALLTRACK.parent / "activate").resolve()
    assert line.endswith(f"(or `source {activate}` once, then `calltrack --help`)")
    help_run = subprocess.run(
        [command, "role", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "list" in help_run.stdout


# -- the whole flow, on both backends --------------------------------------------------------


def test_the_admin_flow_works_on_both_backends(
    make_store: Callable[..., Store], tmp_path: Path
) -> None:
    database = make_store().settings.database_url
    ok(database, "account", "add", "owner")
    agency_key = ok(database, "account", "add", "agency")["api_key"]
    calls = write(tmp_path / "c.jsonl", jsonl([record("1"), record("2")]))
    assert ok(database, "import", calls, "--account", "owner") == {"imported": 2, "updated": 0}
    role_id = str(ok(database, "role", "add", "owner", "reports")["id"])
    role_key = ok(database, "role", "grant", role_id, "agency")["api_key"]
    with api_over(database) as http:
        assert seen_ids(http, role_key, "getByRole") == ["1", "2"]
        assert seen_ids(http, agency_key, "getWithRole") == ["1", "2"]
        assert seen_ids(http, agency_key, "get") == "No rows found"
    ok(database, "key", "revoke", agency_key)
    ok(database, "role", "revoke", role_id, "agency")
    with api_over(database) as http:
        assert seen_ids(http, role_key, "getByRole") == "User is not recognized"
        assert seen_ids(http, agency_key, "getWithRole") == "User is not recognized"
    keys = ok(database, "key", "list", "agency")["keys"]
    assert [(k["kind"], k["revoked"]) for k in keys] == [("user", True), ("role", True)]
    assert "already exists" in failed(database, "account", "add", "owner")


# -- the installed command -------------------------------------------------------------------


def test_the_installed_command_runs_and_exits_1_on_an_error(db: str, tmp_path: Path) -> None:
    def calltrack(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CALLTRACK), "--database", db, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    created = calltrack("account", "add", "acme", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout.splitlines()[-1])["name"] == "acme"

    bad = write(tmp_path / "bad.jsonl", b'{"serviceType": "callback"\n')
    refused = calltrack("import", bad, "--account", "acme")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("error: line 1: ")
    assert "Traceback" not in refused.stderr
