"""Dynamic call tracking's setup commands: campaign settings, rules, snippet, pool, account
settings, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from calltrack.cli import main
from calltrack.store import Store
from calltrack.store.postgres import PostgresStore

Result = tuple[int, dict[str, object] | None, str]


def database_of(store: Store) -> str:
    return store.settings.database_url


def run(database: str, *args: str) -> Result:
    result = CliRunner().invoke(main, ["--database", database, *args, "--json"])
    lines = result.stdout.strip().splitlines()
    return result.exit_code, (json.loads(lines[-1]) if lines else None), result.stderr


def output(database: str, *args: str) -> dict[str, object]:
    """The JSON object a command printed; a command that printed none fails the test."""
    _, out, err = run(database, *args)
    assert out is not None, err
    return out


@pytest.fixture
def db(store: Store) -> str:
    database = database_of(store)
    run(database, "account", "add", "shop")
    return database


def test_campaign_add_takes_the_tracking_settings_and_gives_a_site_key(
    db: str, store: Store
) -> None:
    code, out, err = run(
        db, "campaign", "add", "shop", "1", "Shop", "--site", "https://shop.example",
        "--hold-seconds", "900", "--stub", "8 (495) 999-99-99", "--format",
        "+7 (XXX) XXX-XX-XX", "--replace", "+7 495 123-45-67", "--replace", "84951112233",
        "--selector", ".phone",
    )  # fmt: skip
    assert code == 0, err
    assert out is not None
    key = str(out["site_key"])
    saved = store.tracking_campaign(key)
    assert saved is not None
    assert (saved.hold_seconds, saved.stub, saved.display_format, saved.selector) == (
        900, "74959999999", "+7 (XXX) XXX-XX-XX", ".phone"
    )  # fmt: skip
    assert saved.replace_numbers == ("74951234567", "74951112233")
    # Updating the name keeps the settings and the key.
    assert run(db, "campaign", "add", "shop", "1", "Shop 2")[1] == {
        "id": 1, "name": "Shop 2", "site_key": key
    }  # fmt: skip
    again = store.tracking_campaign(key)
    assert again is not None
    assert again.hold_seconds == 900


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--format", "XX"], "display format", id="format-without-enough-marks"),
        pytest.param(["--stub", "call us"], "--stub", id="stub-not-a-number"),
        pytest.param(["--replace", "12"], "--replace", id="replace-too-short"),
        pytest.param(["--hold-seconds", "5"], "hold time", id="hold-too-short"),
        pytest.param(["--selector", "a" * 300], "selector", id="selector-too-long"),
    ],
)
def test_bad_campaign_settings_exit_1_and_change_nothing(
    db: str, store: Store, args: list[str], message: str
) -> None:
    run(db, "campaign", "add", "shop", "1", "Shop", "--site", "shop.example")
    before = store.tracking_campaign(
        str(output(db, "campaign", "snippet", "shop", "1")["site_key"])
    )
    assert before is not None
    code, _, err = run(db, "campaign", "add", "shop", "1", "Renamed", *args)
    assert code == 1
    assert err.startswith("error: ")
    assert message in err
    assert store.tracking_campaign(before.site_key) == before


def test_rules_are_added_listed_in_order_and_removed(db: str) -> None:
    run(db, "campaign", "add", "shop", "1", "Shop", "--site", "shop.example")
    run(db, "phone", "add", "shop", "74951110000", "--campaign", "1")
    first = run(db, "rule", "add", "shop", "1", "--utm-source", "yandex", "--number",
                "+7 495 111-00-00")[1]  # fmt: skip
    second = run(db, "rule", "add", "shop", "1", "--referrer", "WWW.Partner.example",
                 "--pool")[1]  # fmt: skip
    assert first is not None
    assert second is not None
    assert (first["number"], first["pool"], first["position"]) == ("74951110000", False, 1)
    assert (second["referrer"], second["pool"], second["position"]) == ("partner.example", True, 2)
    listed = run(db, "rule", "list", "shop", "1")[1]
    assert listed == {"rules": [first, second]}
    assert run(db, "rule", "remove", "shop", str(first["id"]))[0] == 0
    assert run(db, "rule", "list", "shop", "1")[1] == {"rules": [second]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--pool", "--number", "74951110000"], "exactly one", id="both"),
        pytest.param([], "exactly one", id="neither"),
        pytest.param(["--number", "74950000000"], "no static number", id="unknown-number"),
        pytest.param(["--referrer", "not a domain", "--pool"], "--referrer", id="bad-domain"),
    ],
)
def test_bad_rules_exit_1_and_add_nothing(db: str, args: list[str], message: str) -> None:
    run(db, "campaign", "add", "shop", "1", "Shop", "--site", "shop.example")
    run(db, "phone", "add", "shop", "74951110000", "--campaign", "1")
    code, _, err = run(db, "rule", "add", "shop", "1", *args)
    assert code == 1
    assert message in err
    assert run(db, "rule", "list", "shop", "1")[1] == {"rules": []}


def test_the_snippet_tag_names_the_server_and_the_site_key(db: str) -> None:
    key = output(db, "campaign", "add", "shop", "1", "Shop", "--site", "shop.example")["site_key"]
    out = run(db, "campaign", "snippet", "shop", "1", "--server", "https://calls.example/")[1]
    assert out == {
        "site_key": key,
        "src": f"https://calls.example/t/{key}.js",
        "tag": f'<script async src="https://calls.example/t/{key}.js"></script>',
    }


def test_pool_statistics_advise_more_numbers_past_three_quarters(db: str, store: Store) -> None:
    run(db, "campaign", "add", "shop", "1", "Shop", "--site", "shop.example")
    assert "no dynamic numbers" in str(output(db, "campaign", "pool", "shop", "1")["advice"])
    run(db, "phone", "add", "shop", "74950000001", "--campaign", "1", "--dynamic")
    out = run(db, "campaign", "pool", "shop", "1")[1]
    assert out == {
        "size": 1, "held_now": 0, "peak_held_24h": 0, "exhausted_hits_24h": 0,
        "advice": "the pool is large enough",
    }  # fmt: skip


def test_account_settings_are_shown_and_changed(db: str) -> None:
    assert run(db, "account", "settings", "shop")[1] == {"unique_days": 180, "target_seconds": 120}
    assert run(db, "account", "settings", "shop", "--unique-days", "30")[1] == {
        "unique_days": 30, "target_seconds": 120
    }  # fmt: skip
    code, _, err = run(db, "account", "settings", "shop", "--target-seconds", "-1")
    assert code == 1
    assert "target seconds" in err


def test_the_postgres_store_locks_rows_and_sqlite_does_not(store: Store) -> None:
    assert store.row_locks == isinstance(store, PostgresStore)
