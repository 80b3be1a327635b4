"""What the entity lists read: accounts seen by a key, campaigns, tracking numbers, tags, roles.

Each list comes whole and in a stable order; the API pages it. Windows filter by creation
(``created``/``since``) or, for tags, by the time of the calls that carry them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from calltrack.errors import Conflict, NotFound
from calltrack.store.core import StoreCore, unix_now

CAMPAIGN_STATUSES: Final = ("active", "paused", "archived")
PHONE_KINDS: Final = ("static", "dynamic")

Row = tuple[Any, ...]


class CatalogQueries(StoreCore):
    """Campaigns and tracking numbers (managed by the CLI), and the lists the entities show."""

    def accounts_by_id(self, account_ids: Sequence[int]) -> list[Row]:
        """(id, name, created_at) of the accounts, by id."""
        self.ensure_ready()
        marks = ", ".join("?" * len(account_ids))
        with self._connect() as conn:
            return conn.execute(
                f"SELECT id, name, created_at FROM accounts WHERE id IN ({marks}) ORDER BY id",
                list(account_ids),
            ).fetchall()

    def campaigns(self, account_id: int, start: int, end: int) -> list[Row]:
        """(campaign_id, name, site, status, created_at), created in the window."""
        self.ensure_ready()
        with self._connect() as conn:
            return conn.execute(
                "SELECT campaign_id, name, site, status, created_at FROM campaigns "
                "WHERE account_id = ? AND created_at BETWEEN ? AND ? ORDER BY campaign_id",
                (account_id, start, end),
            ).fetchall()

    def add_campaign(
        self, account_id: int, campaign_id: int, name: str, site: str, status: str
    ) -> None:
        """Create a campaign, or rename and update the one with that id."""
        if status not in CAMPAIGN_STATUSES:
            raise Conflict(f"status must be one of {', '.join(CAMPAIGN_STATUSES)}")
        self.ensure_ready()
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO campaigns (account_id, campaign_id, name, site, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, campaign_id) DO UPDATE SET "
                "name = excluded.name, site = excluded.site, status = excluded.status",
                (account_id, campaign_id, name, site, status, unix_now()),
            )

    def set_campaign_status(self, account_id: int, campaign_id: int, status: str) -> None:
        if status not in CAMPAIGN_STATUSES:
            raise Conflict(f"status must be one of {', '.join(CAMPAIGN_STATUSES)}")
        self.ensure_ready()
        with self._transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM campaigns WHERE account_id = ? AND campaign_id = ?",
                (account_id, campaign_id),
            ).fetchone():
                raise NotFound(f"the account has no campaign {campaign_id}")
            conn.execute(
                "UPDATE campaigns SET status = ? WHERE account_id = ? AND campaign_id = ?",
                (status, account_id, campaign_id),
            )

    def phones(self, account_id: int, start: int, end: int) -> list[Row]:
        """(number, campaign_id, campaign name, office, kind, created_at), created in the window."""
        self.ensure_ready()
        with self._connect() as conn:
            return conn.execute(
                "SELECT p.number, p.campaign_id, coalesce(c.name, ''), p.office, p.kind, "
                "p.created_at FROM phones p LEFT JOIN campaigns c "
                "ON c.account_id = p.account_id AND c.campaign_id = p.campaign_id "
                "WHERE p.account_id = ? AND p.created_at BETWEEN ? AND ? ORDER BY p.number",
                (account_id, start, end),
            ).fetchall()

    def add_phone(
        self, account_id: int, number: str, campaign_id: int, office: str, kind: str
    ) -> None:
        if kind not in PHONE_KINDS:
            raise Conflict(f"kind must be one of {', '.join(PHONE_KINDS)}")
        if not number.isascii() or not number.isdigit():
            raise Conflict(f"a tracking number is digits only, got {number!r}")
        self.ensure_ready()
        with self._transaction() as conn:
            if conn.execute(
                "SELECT 1 FROM phones WHERE account_id = ? AND number = ?", (account_id, number)
            ).fetchone():
                raise Conflict(f"the account already has the number {number}")
            conn.execute(
                "INSERT INTO phones (account_id, number, campaign_id, office, kind, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (account_id, number, campaign_id, office, kind, unix_now()),
            )

    def remove_phone(self, account_id: int, number: str) -> None:
        self.ensure_ready()
        with self._transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM phones WHERE account_id = ? AND number = ?", (account_id, number)
            ).fetchone():
                raise NotFound(f"the account has no number {number}")
            conn.execute(
                "DELETE FROM phones WHERE account_id = ? AND number = ?", (account_id, number)
            )
            # A removed number is lent no more, and its hold ends now.
            now = unix_now()
            conn.execute(
                "UPDATE holds SET held_until = ? WHERE account_id = ? AND number = ? "
                "AND held_until > ?",
                (now, account_id, number, now),
            )

    def tag_counts(self, account_id: int, start: int, end: int) -> list[Row]:
        """(tag, number of calls) over the account's calls in the window, by tag."""
        self.ensure_ready()
        with self._connect() as conn:
            return conn.execute(
                "SELECT tag, count(*) FROM call_tags WHERE account_id = ? "
                "AND call_time BETWEEN ? AND ? GROUP BY tag ORDER BY tag",
                (account_id, start, end),
            ).fetchall()

    def role_links(self, account_id: int, start: int, end: int) -> list[Row]:
        """Active grants the account gave or received, granted in the window:
        (role id, role name, grantor id, grantor name, grantee id, grantee name, since)."""
        self.ensure_ready()
        with self._connect() as conn:
            return conn.execute(
                "SELECT r.id, r.name, a.id, a.name, b.id, b.name, g.created_at "
                "FROM grants g JOIN roles r ON r.id = g.role_id "
                "JOIN accounts a ON a.id = r.grantor_id JOIN accounts b ON b.id = g.grantee_id "
                "WHERE g.revoked_at IS NULL AND (r.grantor_id = ? OR g.grantee_id = ?) "
                "AND g.created_at BETWEEN ? AND ? ORDER BY g.id",
                (account_id, account_id, start, end),
            ).fetchall()
