"""``calltrack demo``: demo accounts, roles between them, thousands of calls, ready requests."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import msgspec

from calltrack import access
from calltrack.config import Settings
from calltrack.demo_data import generate_calls
from calltrack.errors import Conflict, NotFound
from calltrack.importer import import_bytes
from calltrack.store import Account, Store
from calltrack.words import plural


@dataclass(frozen=True, slots=True)
class DemoAccount:
    name: str
    share: float  # of the demo's calls
    id_prefix: str  # digits that keep its universalIds apart from the other accounts'
    sites: tuple[tuple[str, str], ...]  # (site, its typical search phrase): its business


DEMO_ACCOUNTS = (
    DemoAccount("demo-dealer", 0.5, "1", (
        ("autosalon-kaluga.ru", "купить авто в кредит"),
        ("kaluga-trade-in.ru", "трейд-ин авто"),
        ("autoservice-kaluga.ru", "техобслуживание авто цена"),
    )),
    DemoAccount("demo-clinic", 0.35, "2", (
        ("dental-smile.ru", "стоматология рядом"),
        ("implant-smile.ru", "имплантация зубов цена"),
        ("kids-smile-dent.ru", "детский стоматолог"),
    )),
    DemoAccount("demo-agency", 0.15, "3", (
        ("promo-agency.ru", "контекстная реклама заказать"),
        ("seo-promo-agency.ru", "продвижение сайтов"),
    )),
)  # fmt: skip
# The demo site's campaign: the dealer's, on the demo server itself (its pages at /demo/).
DEMO_SITE_CAMPAIGN = 900
DEMO_SITE_OWN_NUMBER = "74951234567"
DEMO_SITE_POOL = ("74955550001", "74955550002", "74955550003", "74955550004")
DEMO_SITE_STUB = "74955550000"
DEMO_SITE_PATH = "/demo/?utm_source=yandex&utm_medium=cpc&utm_campaign=demo"
GRANTEE = "demo-agency"  # the dealer and the clinic each grant it a role over their calls
GRANTORS = ("demo-dealer", "demo-clinic")
ROLE_NAME = "agency-reporting"
CONSOLE_PATH = "/console/"


@dataclass(frozen=True, slots=True)
class RoleKey:
    """A role key of one grant: through it the grantee sees the grantor's calls."""

    api_key: str
    grantee: str
    grantor: str
    role_id: int
    grant_id: int

    def shows(self) -> str:
        """Its label: whose calls it opens, and through which grant of which role."""
        return (
            f"{self.grantor}'s calls only "
            f"(grant {self.grant_id} of {self.grantor}'s role {self.role_id} {ROLE_NAME!r})"
        )


@dataclass(frozen=True, slots=True)
class Example:
    """One request of the demo: its method, what it shows, and its path on the server."""

    method: str
    shows: str
    path: str


@dataclass
class DemoResult:
    keys: dict[str, str]  # account name -> its user key
    role_keys: list[RoleKey]
    window: str  # from/to of the example requests
    imported: int
    notes: list[str] = field(default_factory=list)
    site_key: str = ""  # the demo site's campaign

    def examples(self) -> list[Example]:
        def path(key: str, method: str) -> str:
            return f"/api/?json/v3/{key}/call/{method}/0/{self.window}"

        dealer = GRANTORS[0]
        found = [Example("get", f"{dealer}'s calls", path(self.keys[dealer], "get"))]
        found += [
            Example("getByRole", f"{r.grantor}'s calls, with a role key of {r.grantee}",
                    path(r.api_key, "getByRole"))
            for r in self.role_keys
        ]  # fmt: skip
        shared = _and(r.grantor for r in self.role_keys if r.grantee == GRANTEE)
        found.append(
            Example("getWithRole", f"{GRANTEE}'s calls and those of {shared}",
                    path(self.keys[GRANTEE], "getWithRole"))
        )  # fmt: skip
        return found

    def as_dict(self, base_url: str | None, serve_command: str) -> dict[str, object]:
        """What --json prints: ``url`` in the examples only while a server answers them."""
        examples: list[dict[str, str]] = []
        for e in self.examples():
            shown = {"method": e.method, "shows": e.shows, "path": e.path}
            examples.append(shown if base_url is None else {**shown, "url": base_url + e.path})
        role_keys = [
            {"api_key": r.api_key, "grantee": r.grantee, "grantor": r.grantor,
             "role_id": r.role_id, "grant_id": r.grant_id, "shows": r.shows()}
            for r in self.role_keys
        ]  # fmt: skip
        result: dict[str, object] = {
            "keys": self.keys,
            "role_keys": role_keys,
            "examples": examples,
            "imported": self.imported,
            "demo_site": {"site_key": self.site_key, "path": DEMO_SITE_PATH}
            | ({} if base_url is None else {"url": base_url + DEMO_SITE_PATH}),
        }
        dealer = GRANTORS[0]
        result["console"] = {"path": CONSOLE_PATH, "sign_in_key": self.keys[dealer]} | (
            {} if base_url is None else {"url": base_url + CONSOLE_PATH}
        )
        if base_url is None:
            result["serve"] = serve_command
        return result

    def describe(
        self, base_url: str | None, serve_command: str, cli: str, database: str | None = None
    ) -> str:
        """The demo's output: every key with what it shows, then requests to try."""
        lines = [*self.notes, "", "User keys (shown only now):"]
        for name, key in self.keys.items():
            shared = _and(r.grantor + "'s" for r in self.role_keys if r.grantee == name)
            with_role = f"; getWithRole adds {shared}" if shared else ""
            lines.append(f"  {name:<12} {key}  its own calls (get){with_role}")
        lines += ["", f"Role keys of {GRANTEE} for getByRole (shown only now), one per grant:"]
        lines += [f"  {r.api_key}  {r.shows()}" for r in self.role_keys]
        lines += ["", f"The admin CLI: {shlex.quote(cli)} --help"]
        if cli != "calltrack" and (activate := Path(cli).parent / "activate").exists():
            lines[-1] += (
                f"  (or `source {shlex.quote(str(activate))}` once, then `calltrack --help`)"
            )
        today = self.window.rsplit("/", 1)[-1]
        dealer_calls = f"/api/?json/v3/{self.keys[GRANTORS[0]]}/call/get/0/{today}"
        with_db = ("--database", database) if database else ()
        simulate = shlex.join([cli, *with_db, "call", "simulate", "--to", "NUMBER"])
        lines += [
            "",
            "The demo site, a car dealer's page whose number +7 (495) 123-45-67 the snippet "
            "swaps for a tracking number (open it in a browser):",
            f"  {base_url or ''}{DEMO_SITE_PATH}",
            "Call the number it shows, as the dealer's PBX would tell calltrack:",
            f"  {simulate}",
            "and find the call, with the visit's utm tags, in today's calls of the dealer:",
            f"  {base_url or ''}{dealer_calls}",
        ]
        if base_url is None:
            lines += ["", f"Nothing is served (--no-serve). To serve: {serve_command}",
                      "and then ask it for these paths:"]  # fmt: skip
        else:
            lines += ["", "Open these while this serves (Ctrl-C stops it):"]
        lines += [
            f"  {e.method}, {e.shows}:\n    {base_url or ''}{e.path}" for e in self.examples()
        ]
        # Last, so that it is what a newcomer sees when the server's log starts below it.
        dealer = GRANTORS[0]
        lines += [
            "",
            f"The console: open this and sign in with {dealer}'s key {self.keys[dealer]}"
            f" (a role key of {GRANTEE} opens a read-only console of its grantor's calls):",
            f"  {base_url or ''}{CONSOLE_PATH}",
        ]
        return "\n".join(lines)


def _and(names: Iterable[str]) -> str:
    return " and ".join(names)


def build_demo(
    store: Store, settings: Settings, *, total_calls: int = 6000, site_host: str = "127.0.0.1"
) -> DemoResult:
    """Create (or refresh) the demo in ``store`` and return fresh keys and example requests.

    Running it again keeps the calls and issues new keys, since old ones cannot be shown.
    """
    accounts: dict[str, Account] = {}
    notes: list[str] = []
    imported = 0
    counts = [max(1, int(total_calls * demo.share)) for demo in DEMO_ACCOUNTS[:-1]]
    counts.append(max(1, total_calls - sum(counts)))  # the shares' rounding: total_calls in all
    for seed, (demo, count) in enumerate(zip(DEMO_ACCOUNTS, counts, strict=True)):
        try:
            accounts[demo.name] = store.find_account(demo.name)
            notes.append(f"{demo.name}: already present, keeping its calls")
            continue
        except NotFound:
            accounts[demo.name] = store.create_account(demo.name)
        calls = generate_calls(count, seed=seed + 1, days=90, timezone=settings.timezone,
                               id_prefix=demo.id_prefix, sites=demo.sites)  # fmt: skip
        lines = b"\n".join(msgspec.json.encode(call) for call in calls)
        result = import_bytes(store, accounts[demo.name].id, lines, settings.zone)
        _add_tracking_numbers(store, accounts[demo.name].id, seed)
        imported += result.imported
        sites = ", ".join(site for site, _phrase in demo.sites)
        notes.append(f"{demo.name}: {plural(result.imported, 'call')} on {sites}, last 90 days")

    keys = {name: access.issue_user_key(store, acc.id) for name, acc in accounts.items()}
    role_keys: list[RoleKey] = []
    # Two grantors share with the agency, so getWithRole merges three accounts' calls.
    for grantor in GRANTORS:
        role = _role(store, accounts[grantor].id)
        with contextlib.suppress(NotFound):
            store.revoke_grant(role, accounts[GRANTEE].id)
        grant = store.create_grant(role, accounts[GRANTEE].id)
        key = access.issue_role_key(store, grant)
        role_keys.append(RoleKey(key, GRANTEE, grantor, role, grant.id))

    today = date.today()
    window = f"{today - timedelta(days=90)}/{today}"
    site_key = _demo_site(store, accounts[GRANTORS[0]].id, site_host)
    return DemoResult(keys, role_keys, window, imported, notes, site_key)


def _demo_site(store: Store, account_id: int, site_host: str) -> str:
    """The demo site's campaign with its pool (made once; its site follows the host)."""
    store.add_campaign(account_id, DEMO_SITE_CAMPAIGN, "Demo site", site_host, "active")
    numbers = {number for number, _kind in store.campaign_numbers(account_id, DEMO_SITE_CAMPAIGN)}
    for number in DEMO_SITE_POOL:
        if number not in numbers:
            store.add_phone(account_id, number, DEMO_SITE_CAMPAIGN, "Отдел продаж", "dynamic")
    return store.configure_campaign(
        account_id,
        DEMO_SITE_CAMPAIGN,
        stub=DEMO_SITE_STUB,
        display_format="+7 (XXX) XXX-XX-XX",
        replace_numbers=[DEMO_SITE_OWN_NUMBER],
        selector="#header-phone",
    ).site_key


def cli_command() -> str:
    """How to run this installation's ``calltrack`` from the current directory.

    ``calltrack`` when PATH finds this one; else its path (relative when under the current
    directory), since the demo's virtualenv is not on PATH until activated.
    """
    script = Path(sys.executable).parent / ("calltrack.exe" if os.name == "nt" else "calltrack")
    on_path = shutil.which("calltrack")
    if not script.exists() or (on_path and Path(on_path).resolve() == script.resolve()):
        return "calltrack"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def serve_command(cli: str, database: str | None, host: str, port: int) -> str:
    """The command that serves what the demo filled, as typed in a shell."""
    words = [cli, *(("--database", database) if database else ()), "serve"]
    words += [*(("--host", host) if host != "127.0.0.1" else ()), "--port", str(port)]
    return shlex.join(words)


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
