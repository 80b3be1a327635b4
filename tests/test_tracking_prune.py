"""Visits, page views and holds are forgotten once no call can need them: after the account's
unique window plus a margin, and not before."""

from __future__ import annotations

from calltrack.store import Store
from calltrack.store.tracking import PRUNE_MARGIN_SECONDS
from calltrack.tracking.hits import HitBody, Visit, record_hit
from tests.conftest import new_account

DAY = 86400


def rows(store: Store, account: int) -> dict[str, int]:
    with store._connect() as conn:
        return {
            table: int(
                conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", (account,)).fetchone()[
                    0
                ]
            )
            for table, where in (
                ("visitors", "account_id = ?"),
                ("sessions", "account_id = ?"),
                ("holds", "account_id = ?"),
                ("page_views", "session_id IN (SELECT id FROM sessions WHERE account_id = ?)"),
            )
        }


def test_old_visits_go_after_the_unique_window_and_a_margin_new_ones_stay(store: Store) -> None:
    account, _ = new_account(store, "shop")
    store.add_campaign(account, 1, "Shop", "shop.example", "active")
    store.add_phone(account, "74950000001", 1, "", "dynamic")
    store.add_phone(account, "74950000002", 1, "", "dynamic")
    campaign = store.configure_campaign(account, 1)
    store.set_account_settings(account, unique_days=30, target_seconds=None)
    zone = store.settings.zone
    old, recent = 1_700_000_000, 1_700_000_000 + 20 * DAY
    for at in (old, recent):
        hit = HitBody(k=campaign.site_key, u="https://shop.example/")
        record_hit(store, campaign, hit, Visit("127.0.0.1", "ua", at, 0), zone)
    assert rows(store, account) == {"visitors": 2, "sessions": 2, "holds": 2, "page_views": 2}
    # Just inside the window plus the margin: everything stays.
    store.prune_tracking(now=old + 30 * DAY + PRUNE_MARGIN_SECONDS)
    assert rows(store, account) == {"visitors": 2, "sessions": 2, "holds": 2, "page_views": 2}
    # Past it for the old visit only.
    store.prune_tracking(now=old + 600 + 30 * DAY + PRUNE_MARGIN_SECONDS + 1)
    assert rows(store, account) == {"visitors": 1, "sessions": 1, "holds": 1, "page_views": 1}
