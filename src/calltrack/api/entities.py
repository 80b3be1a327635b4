"""The list entities: user, campaign, tag, phone, callrole (read with ``get``).

Each is a list in a stable order, paged like calls. The window filters by creation (user,
campaign, phone: ``created``; callrole: ``since``) or, for tags, by the time of the calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from calltrack.api.answers import Answer, row_writer
from calltrack.api.request import PageQuery, V3Request
from calltrack.config import Settings
from calltrack.errors import BadPage, NoRows
from calltrack.model import format_local
from calltrack.store import ResolvedKey, Store

Row = dict[str, object]

FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "user": ("id", "name", "timezone", "created", "relation"),
    "campaign": ("id", "name", "site", "status", "created"),
    "tag": ("name", "calls"),
    "phone": ("number", "campaignId", "campaignName", "office", "kind", "created"),
    "callrole": (
        "roleId",
        "roleName",
        "grantorId",
        "grantorName",
        "granteeId",
        "granteeName",
        "since",
        "direction",
    ),
}


def entity_page(
    store: Store,
    settings: Settings,
    request: V3Request,
    query: PageQuery,
    resolved: ResolvedKey,
    owners: list[int],
) -> Answer:
    """One page of the entity's list for the key's account, in the requested format."""
    start = query.window.start
    end = query.window.end if query.window.end is not None else 2**62
    listed = _LISTS[request.entity](store, settings, resolved.account_id, owners, start, end)
    size = settings.page_size
    rows = listed[query.number * size : (query.number + 1) * size]
    if not rows:
        raise NoRows if query.number == 0 else BadPage
    out = row_writer(request.format)
    return Answer(out.render_rows(request.entity, FIELDS[request.entity], rows), out.CONTENT_TYPE)


Lister = Callable[[Store, Settings, int, list[int], int, int], list[Row]]


def _users(
    store: Store, settings: Settings, account: int, owners: list[int], start: int, end: int
) -> list[Row]:
    # getWithRole lists the key's account and every account it sees through roles.
    return [
        {
            "id": id_,
            "name": name,
            "timezone": settings.timezone,
            "created": format_local(created, settings.zone),
            "relation": "self" if id_ == account else "grantor",
        }
        for id_, name, created in store.accounts_by_id(owners)
        if start <= created <= end
    ]


def _campaigns(
    store: Store, settings: Settings, account: int, owners: list[int], start: int, end: int
) -> list[Row]:
    return [
        {
            "id": id_,
            "name": name,
            "site": site,
            "status": status,
            "created": format_local(created, settings.zone),
        }
        for id_, name, site, status, created in store.campaigns(account, start, end)
    ]


def _tags(
    store: Store, settings: Settings, account: int, owners: list[int], start: int, end: int
) -> list[Row]:
    return [{"name": tag, "calls": count} for tag, count in store.tag_counts(account, start, end)]


def _phones(
    store: Store, settings: Settings, account: int, owners: list[int], start: int, end: int
) -> list[Row]:
    return [
        {
            "number": number,
            "campaignId": campaign_id,
            "campaignName": campaign_name,
            "office": office,
            "kind": kind,
            "created": format_local(created, settings.zone),
        }
        for number, campaign_id, campaign_name, office, kind, created in store.phones(
            account, start, end
        )
    ]


def _callroles(
    store: Store, settings: Settings, account: int, owners: list[int], start: int, end: int
) -> list[Row]:
    rows: list[Row] = []
    for link in store.role_links(account, start, end):
        role_id, role_name, grantor_id, grantor_name, grantee_id, grantee_name, since = link
        rows.append(
            {
                "roleId": role_id,
                "roleName": role_name,
                "grantorId": grantor_id,
                "grantorName": grantor_name,
                "granteeId": grantee_id,
                "granteeName": grantee_name,
                "since": format_local(since, settings.zone),
                "direction": "granted" if grantor_id == account else "received",
            }
        )
    return rows


_LISTS: Final[dict[str, Lister]] = {
    "user": _users,
    "campaign": _campaigns,
    "tag": _tags,
    "phone": _phones,
    "callrole": _callroles,
}
