"""The store: one class over SQLite and PostgreSQL, assembled from its query groups."""

from __future__ import annotations

from calltrack.store.admin import AdminQueries
from calltrack.store.catalog import CatalogQueries
from calltrack.store.changes import CallListQueries
from calltrack.store.telephony import TelephonyQueries


class SqlStore(AdminQueries, CatalogQueries, TelephonyQueries, CallListQueries):
    """Everything calltrack keeps, behind methods; SQL lives in ``calltrack.store`` only.

    Backends (``sqlite.SqliteStore``, ``postgres.PostgresStore``) subclass it and provide the
    connections (see ``core.StoreCore``).
    """
