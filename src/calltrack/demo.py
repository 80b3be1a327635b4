"""``calltrack demo``: demo accounts, a role between them, thousands of calls, ready URLs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import date, timedelta

import msgspec

from calltrack import access
from calltrack.config import Settings
from calltrack.demo_data import generate_calls
from calltrack.errors import Conflict, NotFound
from calltrack.importer import import_bytes
from calltrack.store import Account, Store

# (name, share of the demo's calls, digits that keep its universalIds apart)
DEMO_ACCOUNTS = (("demo-dealer", 0.5, "1"), ("demo-clinic", 0.35, "2"), ("demo-agency", 0.15, "3"))
ROLE_NAME = "agency-reporting"


@dataclass
class DemoResult:
    keys: dict[str, str]
    role_key: str
    urls: dict[str, str]
    imported: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "keys": self.keys,
            "role_key": self.role_key,
            "urls": self.urls,
            "imported": self.imported,
        }

    def describe(self) -> str:
        lines = [*self.notes, "", "API keys (user keys; shown only now):"]
        lines += [f"  {name:<12} {key}" for name, key in self.keys.items()]
        lines += [f"  role key of demo-agency (dealer and clinic share with it): {self.role_key}"]
        lines += ["", "Open these:"]
        lines += [f"  {method:<12} {url}" for method, url in self.urls.items()]
        return "\n".join(lines)


def build_demo(
    store: Store, settings: Settings, *, total_calls: int = 6000, base_url: str
) -> DemoResult:
    """Create (or refresh) the demo in ``store`` and return fresh keys and example URLs.

    Running it again keeps the calls and issues new keys, since old ones cannot be shown.
    """
    accounts: dict[str, Account] = {}
    notes: list[str] = []
    imported = 0
    for seed, (name, share, prefix) in enumerate(DEMO_ACCOUNTS):
        try:
            accounts[name] = store.find_account(name)
            notes.append(f"{name}: already present, keeping its calls")
            continue
        except NotFound:
            accounts[name] = store.create_account(name)
        count = max(1, int(total_calls * share))
        lines = b"\n".join(
            msgspec.json.encode(call)
            for call in generate_calls(
                count, seed=seed + 1, days=90, timezone=settings.timezone, id_prefix=prefix
            )
        )
        result = import_bytes(store, accounts[name].id, lines, settings.zone)
        _add_tracking_numbers(store, accounts[name].id, seed)
        imported += result.imported
        notes.append(f"{name}: {result.imported} calls over the last 90 days")

    keys = {name: access.issue_user_key(store, acc.id) for name, acc in accounts.items()}
    agency = accounts["demo-agency"]
    role_key = ""
    # Two grantors share with the agency, so getWithRole merges three accounts' calls.
    for grantor in ("demo-dealer", "demo-clinic"):
        role = _role(store, accounts[grantor].id)
        with contextlib.suppress(NotFound):
            store.revoke_grant(role, agency.id)
        grant = store.create_grant(role, agency.id)
        key = access.issue_role_key(store, grant)
        if grantor == "demo-dealer":
            role_key = key

    today = date.today()
    window = f"0/{today - timedelta(days=90)}/{today}"
    api = f"{base_url}/api/?json/v3"
    urls = {
        "get": f"{api}/{keys['demo-dealer']}/call/get/{window}",
        "getByRole": f"{api}/{role_key}/call/getByRole/{window}",
        "getWithRole": f"{api}/{keys['demo-agency']}/call/getWithRole/{window}",
    }
    return DemoResult(keys, role_key, urls, imported, notes)


def _role(store: Store, grantor_id: int) -> int:
    """The id of the grantor's demo role, created on first use."""
    try:
        return store.create_role(grantor_id, ROLE_NAME).id
    except Conflict:
        return store.role_id_by_name(grantor_id, ROLE_NAME)


def _add_tracking_numbers(store: Store, account_id: int, seed: int) -> None:
    """A static and a dynamic number for each campaign the demo calls brought in."""
    for index, (campaign_id, *_rest) in enumerate(store.campaigns(account_id, 0, 2**62)):
        base = 74950000000 + seed * 1000 + index * 10
        store.add_phone(account_id, str(base), campaign_id, "Главный офис", "static")
        store.add_phone(account_id, str(base + 1), campaign_id, "", "dynamic")
