"""`calltrack telephony ...` and `calltrack call simulate`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner

from calltrack.cli import main
from calltrack.store import Store
from calltrack.tracking.hits import HitBody, Visit, record_hit
from tests.conftest import new_account


def run(store: Store, *args: str) -> tuple[int, dict[str, object], str]:
    result = CliRunner().invoke(main, ["--database", store.settings.database_url, *args, "--json"])
    lines = result.stdout.strip().splitlines()
    return result.exit_code, (json.loads(lines[-1]) if lines else {}), result.stderr


def test_endpoints_are_added_with_their_secret_once_listed_and_revoked(store: Store) -> None:
    account, _ = new_account(store, "shop")
    code, generic, _ = run(store, "telephony", "add", "shop", "--server", "https://calls.example")
    assert code == 0
    assert generic["url"] == "https://calls.example/telephony/generic"
    secret = str(generic["secret"])
    assert store.endpoint_by_secret(secret) is not None
    code, zadarma, _ = run(store, "telephony", "add", "shop", "--provider", "zadarma")
    assert code == 0
    assert str(zadarma["url"]).startswith("http://127.0.0.1:8080/telephony/zadarma/")
    listed = run(store, "telephony", "list", "shop")[1]["endpoints"]
    assert isinstance(listed, list)
    assert [(e["provider"], e["hint"], e["state"]) for e in listed] == [
        ("generic", secret[:4], "active"),
        ("zadarma", str(zadarma["secret"])[:4], "active"),
    ]
    assert secret not in json.dumps(listed)  # shown once, when added
    assert run(store, "telephony", "remove", "shop", str(generic["id"]))[0] == 0
    assert store.endpoint_by_secret(secret) is None
    code, _, err = run(store, "telephony", "remove", "shop", "999")
    assert (code, err.startswith("error: ")) == (1, True)
    assert store.telephony_endpoints(account)[0].revoked_at is not None


def test_a_simulated_call_to_a_held_number_carries_its_visit(store: Store) -> None:
    account, _ = new_account(store, "shop")
    store.add_campaign(account, 1, "Shop", "https://shop.example", "active")
    store.add_phone(account, "74950000001", 1, "", "dynamic")
    campaign = store.configure_campaign(account, 1)
    hit = HitBody(k=campaign.site_key, u="https://shop.example/?utm_source=yandex&utm_medium=cpc")
    now = int(time.time())
    shown = record_hit(store, campaign, hit, Visit("127.0.0.1", "ua", now, 0), store.settings.zone)
    code, call, err = run(store, "call", "simulate", "--to", "+7 (495) 000-00-01", "--talk", "90")
    assert code == 0, err
    assert (call["callerIdToClient"], call["duration"], call["status"]) == (shown.n, 90, "success")
    assert (call["utm_source"], call["utm_medium"], call["ctCampaignId"]) == ("yandex", "cpc", 1)


def test_simulating_a_call_to_a_number_nobody_has_exits_1(store: Store) -> None:
    new_account(store, "shop")
    code, _, err = run(store, "call", "simulate", "--to", "74950000009")
    assert code == 1
    assert "no account has the number 74950000009" in err
