"""The console's test data sets and what the pages must show of them, counted in Python.

``demo_shop`` fills a store with three accounts: a shop with generated calls over the last 60
days up to now (the demo-like set the screenshots show), an agency holding a role key to the
shop's calls, and another account whose calls nobody here may see. ``hostile_shop`` fills one
account whose every text field (and its name) is markup and script. The expected numbers come
from the records as imported, never from the service.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from calltrack import access
from calltrack.demo_data import generate_calls
from calltrack.importer import import_bytes
from calltrack.model import CallRecord, source_of
from calltrack.store import Store
from calltrack.tracking.hits import HitBody, Visit, record_hit

Record = dict[str, Any]
COUNTS: Final = ("calls", "answered", "unique", "target", "uniqueTarget")
DEMO_CALLS: Final = 1200
DEMO_DAYS: Final = 60


@dataclass
class Campaign:
    """A campaign set up in the store, and what its section must show."""

    id: int
    name: str
    site: str
    numbers: list[tuple[str, str]]  # (number, kind) in the order added
    rules: list[tuple[str, str]]  # (utm_source, number shown: "" for the pool)
    visitors: int  # visits that asked for a number just now
    site_key: str = ""

    @property
    def pool(self) -> int:
        return sum(kind == "dynamic" for _, kind in self.numbers)

    @property
    def held(self) -> int:
        return min(self.visitors, self.pool)

    @property
    def exhausted(self) -> int:
        """Visits that got the stub: the pool was all held."""
        return self.visitors - self.held if self.pool else 0

    @property
    def advice(self) -> str:
        """The contract's advice: no pool; add numbers once the peak passes 75% of the pool
        or a visitor got the stub; else enough."""
        if not self.pool:
            return "no_pool"
        return "add" if self.held > 0.75 * self.pool or self.exhausted else "enough"


@dataclass
class Shop:
    """A data set in a store: who signs in with what, and the records as imported."""

    account: int
    name: str
    key: str  # the shop's user key
    calls: list[Record]
    role_key: str = ""  # the agency's role key to the shop's calls
    agency_key: str = ""  # the agency's own user key
    other_calls: tuple[Record, ...] = ()  # another account's: never shown here
    campaigns: tuple[Campaign, ...] = ()


def _load(store: Store, account: int, calls: list[Record]) -> None:
    lines = b"\n".join(msgspec.json.encode(call) for call in calls)
    result = import_bytes(store, account, lines, store.settings.zone)  # all or nothing
    assert result.imported == len(calls), result


def demo_shop(store: Store, *, now: datetime | None = None) -> Shop:
    """The demo-like set: 1,200 calls of the last 60 days (the shop), a role key of an agency
    to them, and 200 calls of another account."""
    zone = store.settings.zone
    now = now or datetime.now(zone)
    shop = store.create_account("Demo shop")
    key = access.issue_user_key(store, shop.id)
    calls = list(generate_calls(DEMO_CALLS, seed=16, days=DEMO_DAYS, now=now, id_prefix="1"))
    _load(store, shop.id, calls)
    agency = store.create_account("Agency")
    agency_key = access.issue_user_key(store, agency.id)
    role = store.create_role(shop.id, "reports")
    role_key = access.issue_role_key(store, store.create_grant(role.id, agency.id))
    other = store.create_account("Other")
    other_calls = list(generate_calls(200, seed=17, days=DEMO_DAYS, now=now, id_prefix="2"))
    _load(store, other.id, other_calls)
    campaigns = tuple(setup_campaigns(store, shop.id, calls))
    return Shop(
        shop.id, "Demo shop", key, calls, role_key, agency_key, tuple(other_calls), campaigns
    )


def setup_campaigns(store: Store, account: int, calls: list[Record]) -> list[Campaign]:
    """The first three campaigns the calls name (the import made them) set up with numbers,
    rules and visits: the first with its pool all held and one visit more (advice: add), the
    second with room to spare, the third with a static number only (no pool)."""
    named: dict[int, tuple[str, str]] = {}
    for call in calls:
        if call["ctCampaignId"]:
            named.setdefault(call["ctCampaignId"], (call["ctCampaignName"], call["site"]))
    ranked = sorted(named)[:3]  # the page's first three (it lists them by id)
    plans = (  # (dynamic numbers, static numbers, visits)
        (4, 1, 5),
        (6, 0, 2),
        (0, 1, 0),
    )
    made = []
    now = int(time.time())
    for index, (campaign_id, (dynamic, static, visits)) in enumerate(
        zip(ranked, plans, strict=True)
    ):
        name, site = named[campaign_id]
        url = f"https://{site}"
        store.add_campaign(account, campaign_id, name, url, "active")
        numbers = [(f"7495{index}00{n:04d}", "dynamic") for n in range(dynamic)]
        numbers += [(f"7495{index}10{n:04d}", "static") for n in range(static)]
        for number, kind in numbers:
            store.add_phone(account, number, campaign_id, "74951112233", kind)
        rules = [("yandex", numbers[-1][0] if static else "")]
        for utm_source, number in rules:
            store.add_rule(account, campaign_id, utm_source=utm_source, number=number)
        tracked = store.configure_campaign(
            account, campaign_id, stub="74959999999", display_format="+7 (XXX) XXX-XX-XX"
        )
        for visit in range(visits):  # each a new visitor from nowhere: the pool lends one
            hit = HitBody(k=tracked.site_key, u=url + "/")
            record_hit(
                store, tracked, hit, Visit(f"10.0.0.{visit}", "test", now, 0), store.settings.zone
            )
        made.append(Campaign(campaign_id, name, url, numbers, rules, visits, tracked.site_key))
    return made


# -- hostile data ------------------------------------------------------------------------------


def payload(name: str) -> str:
    """Markup and script for the field ``name``: an element with an id the test looks for, a
    handler that would raise a dialog, a script block and an attribute break-out."""
    mark = f"xss-{name}"
    return (
        f'"><img id="{mark}" src="x" onerror="alert(\'{mark}\')">'
        f"<script>alert('{mark}')</script><b id=\"{mark}-b\">{name}</b>'"
    )


HOSTILE_NAME: Final = payload("account")
_TEXT_FIELDS: Final = tuple(
    name
    for name, kind in zip(CallRecord.__struct_fields__, CallRecord.__annotations__.values(),
                          strict=True)
    if kind == "Text"  # the annotations are strings (model.py postpones them)
)  # fmt: skip


def text_fields() -> tuple[str, ...]:
    """The record's free-text fields (site, utm_*, city, userAgent, ctCampaignName, ...)."""
    return tuple(name for name in _TEXT_FIELDS if name not in ("visitSite", "siteVisit"))


def hostile_calls(now: datetime, count: int = 6) -> list[Record]:
    """Calls of today whose every text field, tag and webhook address is markup and script
    (visitSite and siteVisit are one field: one payload for both)."""
    calls = []
    for index in range(count):
        call: Record = {
            "universalId": f"9{index:05d}",
            "serviceType": "calltracking",
            "status": "success" if index % 2 else "fail",
            "callTime": (now - timedelta(minutes=5 * index + 1)).strftime("%Y-%m-%d %H:%M:%S"),
            "clientNumber": f"7916000{index:04d}",
            "managerNumber": "74951234567",
            "duration": 30 + 60 * index,
            "unique": index % 2 == 0,
            "target": index % 3 == 0,
            "ctCampaignId": 4242,
            "ctIsListened": "1",
            "tags": [payload("tag"), "plain"],
            "hooks": [
                {
                    "hookEventName": "AFTER_CALL_FINISH",
                    "hookAddress": payload("hookAddress"),
                    "hookMethod": "POST",
                    "hookResponseStatus": 200,
                }
            ],
        }
        for name in text_fields():
            call[name] = payload(name)
        call["visitSite"] = call["siteVisit"] = payload("visitSite")
        call["uniqueTarget"] = call["unique"] and call["target"]
        calls.append(call)
    return calls


def hostile_shop(store: Store, *, now: datetime | None = None) -> Shop:
    """One account named with markup, whose calls are hostile_calls; a role key to them."""
    zone = store.settings.zone
    now = now or datetime.now(zone)
    shop = store.create_account(HOSTILE_NAME)
    key = access.issue_user_key(store, shop.id)
    calls = hostile_calls(now)
    _load(store, shop.id, calls)
    # A role named with markup granted to an account named so, and one such account's role
    # granted to this one: the settings page shows all three names.
    grantee = store.create_account(payload("grantee"))
    role = store.create_role(shop.id, payload("role"))
    access.issue_role_key(store, store.create_grant(role.id, grantee.id))
    grantor = store.create_account(payload("grantor"))
    theirs = store.create_role(grantor.id, payload("their-role"))
    store.create_grant(theirs.id, shop.id)
    return Shop(shop.id, HOSTILE_NAME, key, calls)


# -- what the overview must show ---------------------------------------------------------------


def day_of(record: Record) -> date:
    return date.fromisoformat(str(record["callTime"])[:10])


def source(record: Record) -> str:
    return source_of(str(record["utm_source"]), str(record["referrer"]))


def in_days(records: list[Record], first: date, last: date) -> list[Record]:
    return [r for r in records if first <= day_of(r) <= last]


def per_day_and_source(records: list[Record], first: date, last: date) -> dict[str, list[int]]:
    """Calls of each source on each day from ``first`` to ``last``."""
    days = (last - first).days + 1
    found: dict[str, list[int]] = defaultdict(lambda: [0] * days)
    for record in in_days(records, first, last):
        found[source(record)][(day_of(record) - first).days] += 1
    return dict(found)


def thousands(value: int) -> str:
    """A number as the console writes it (a narrow no-break space between thousands)."""
    return f"{value:,}".replace(",", "\u202f")


def today(zone: ZoneInfo) -> date:
    return datetime.now(zone).date()
