"""The OpenAPI 3.1 document of v4, built once from the code's own types.

The call record's schema comes from ``calltrack.model.CallRecord`` (msgspec writes JSON
Schema 2020-12, which OpenAPI 3.1 uses as it is), so the document cannot drift from what
the service stores and serves.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from calltrack import __version__
from calltrack.model import FIELD_NAMES, CallRecord
from calltrack.store.changes import GROUP_COLUMNS

_REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _problem_responses(*statuses: int) -> dict[str, Any]:
    titles = {
        400: "A parameter is bad; `parameter` names it",
        401: "No valid key in `Authorization: Bearer KEY`",
        404: "No such call, or not one this key may see",
        410: "The cursor expired: start over without `after`",
        429: "Too many requests: wait `Retry-After` seconds",
        503: "The database is unavailable: retry after `Retry-After` seconds",
    }
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    }
    headers = {
        401: {
            "WWW-Authenticate": {
                "description": 'The scheme to use: `Bearer realm="calltrack"`.',
                "required": True,
                "schema": {"type": "string", "pattern": "^Bearer "},
            }
        },
        429: retry_after,
        503: retry_after,
    }
    return {
        str(status): {
            "description": titles[status],
            **({"headers": headers[status]} if status in headers else {}),
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        }
        for status in statuses
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_SCOPE = _query(
    "scope",
    "own: the key's account (default); withRole: also every account that granted it a role "
    "(user keys). A role key always sees its grantor's calls.",
    {"type": "string", "enum": ["own", "withRole"]},
)
_FIELD_NAME = "(" + "|".join(name for name in FIELD_NAMES if name != "page") + ")"
_FIELDS = _query(
    "fields",
    "Comma-separated names of call record fields: only those are returned.",
    {"type": "string", "pattern": f"^{_FIELD_NAME}(,{_FIELD_NAME})*$"},
)
# What `from` and `to` take: unix seconds, a date, or ISO 8601 with an offset.
_INSTANT = {
    "type": "string",
    "pattern": (
        "^([0-9]{1,12}|[0-9]{4}-[0-9]{2}-[0-9]{2}"
        "|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2}))$"
    ),
}
_FILTERS = [
    _query(
        "from",
        "Start: YYYY-MM-DD (service time zone), unix seconds, or ISO 8601 with an offset.",
        _INSTANT,
    ),
    _query("to", "End, inclusive: as `from` (a date means its last second).", _INSTANT),
    _query("status", "success or fail.", {"type": "string", "enum": ["success", "fail"]}),
    _query("serviceType", "callback, calltracking or import.", {"type": "string"}),
    _query("campaign", "A campaign id.", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
    _query("tag", "A tag the call has.", {"type": "string"}),
    _query("utm_source", "Exact utm_source.", {"type": "string"}),
    _query("utm_medium", "Exact utm_medium.", {"type": "string"}),
    _query("utm_campaign", "Exact utm_campaign.", {"type": "string"}),
    _query("unique", "true or false.", {"type": "string", "enum": ["true", "false"]}),
    _query("target", "true or false.", {"type": "string", "enum": ["true", "false"]}),
    _query(
        "q",
        "Digits in the caller's or the manager's number.",
        {"type": "string", "pattern": "[0-9]"},
    ),
]
_BY_NAME = "(" + "|".join(("day", "hour", *GROUP_COLUMNS)) + ")"
_NDJSON_NOTE = (
    "With `Accept: application/x-ndjson` the answer is streamed: one item per line, then a "
    "last line with `next` (and the rest of the envelope). A stream that ends without that "
    "line was cut short: repeat the request. The stream's `x-itemSchema` describes its lines "
    "(as `itemSchema` does in OpenAPI 3.2)."
)


@cache
def document() -> bytes:
    """The OpenAPI document, encoded."""
    _, components = msgspec.json.schema_components([CallRecord], ref_template=_REF)
    call = components["CallRecord"]
    call["description"] = "A call: the v3 record without `page` (or only `fields` of it)."
    call["properties"].pop("page", None)
    schemas: dict[str, Any] = {
        **components,
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "parameter": {"type": "string"},
            },
        },
        "Change": {
            "type": "object",
            "required": ["cursor", "op", "universalId", "changedAt"],
            "properties": {
                "cursor": {"type": "string", "description": "Resume after this change."},
                "op": {"type": "string", "enum": ["upsert", "delete"]},
                "universalId": {"type": "string"},
                "changedAt": {"type": "string", "description": "YYYY-MM-DD HH:MM:SS, service zone"},
                "call": _ref("CallRecord"),
            },
        },
        "ChangesPage": {
            "type": "object",
            "required": ["changes", "next", "hasMore"],
            "properties": {
                "changes": {"type": "array", "items": _ref("Change")},
                "next": {"type": "string", "description": "`after` of the next read."},
                "hasMore": {"type": "boolean"},
            },
        },
        "ChangesEnd": {
            "type": "object",
            "description": "The last line of a changes stream (NDJSON).",
            "required": ["next", "hasMore"],
            "properties": {
                "next": {"type": "string", "description": "`after` of the next read."},
                "hasMore": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "CallsEnd": {
            "type": "object",
            "description": "The last line of a calls stream (NDJSON).",
            "required": ["next", "total"],
            "properties": {
                "next": {"type": ["string", "null"], "description": "`cursor` of the next page."},
                "total": {"type": "integer", "minimum": 0},
            },
            "additionalProperties": False,
        },
        "CallsPage": {
            "type": "object",
            "required": ["calls", "next", "total"],
            "properties": {
                "calls": {"type": "array", "items": _ref("CallRecord")},
                "next": {"type": ["string", "null"], "description": "`cursor` of the next page."},
                "total": {"type": "integer", "minimum": 0},
            },
        },
        "Stats": {
            "type": "object",
            "required": ["by", "groups"],
            "properties": {
                "by": {"type": "array", "items": {"type": "string"}},
                "groups": {"type": "array", "items": _ref("StatsGroup")},
            },
        },
        "StatsGroup": {
            "type": "object",
            "description": "One group: its keys (as named in `by`), then the counts.",
            "required": ["calls", "answered", "unique", "target", "uniqueTarget", "talkSeconds"],
            "properties": {
                "day": {"type": "string"},
                "hour": {"type": "string"},
                "source": {"type": "string"},
                "campaign": {"type": "integer"},
                "campaignName": {"type": "string"},
                "utm_source": {"type": "string"},
                "utm_medium": {"type": "string"},
                "utm_campaign": {"type": "string"},
                "device": {"type": "string"},
                "calls": {"type": "integer", "minimum": 0},
                "answered": {"type": "integer", "minimum": 0},
                "unique": {"type": "integer", "minimum": 0},
                "target": {"type": "integer", "minimum": 0},
                "uniqueTarget": {"type": "integer", "minimum": 0},
                "talkSeconds": {"type": "integer", "minimum": 0},
            },
        },
    }

    def ndjson(item: str, end: str) -> dict[str, Any]:
        lines = {"oneOf": [_ref(item), _ref(end)]}
        return {"application/x-ndjson": {"schema": {"type": "string"}, "x-itemSchema": lines}}

    paths = {
        "/api/v4/calls/changes": {
            "get": {
                "operationId": "listChanges",
                "summary": "Every change of the calls the key sees, exactly once, in order",
                "description": (
                    "Without `after`: every current call once (as upserts), then what changes "
                    "after. Loop with `after = next`. A call changed several times between "
                    "reads may show once, with its last state. " + _NDJSON_NOTE
                ),
                "parameters": [
                    _query(
                        "after",
                        "A cursor from an earlier answer (`next` or a change's `cursor`).",
                        {"type": "string"},
                    ),
                    _query(
                        "limit",
                        "Changes at most: 1-10,000 (default 1,000), up to 100,000 streamed.",
                        {"type": "integer", "minimum": 1, "maximum": 100000},
                    ),
                    _FIELDS,
                    _SCOPE,
                ],
                "responses": {
                    "200": {
                        "description": "Changes after the cursor.",
                        "content": {
                            "application/json": {"schema": _ref("ChangesPage")},
                            **ndjson("Change", "ChangesEnd"),
                        },
                    },
                    **_problem_responses(400, 401, 410, 429, 503),
                },
            }
        },
        "/api/v4/calls": {
            "get": {
                "operationId": "listCalls",
                "summary": "Calls in call-time order, filtered, with keyset cursors",
                "description": _NDJSON_NOTE,
                "parameters": [
                    *_FILTERS,
                    _query(
                        "order",
                        "callTime (default) or -callTime.",
                        {"type": "string", "enum": ["callTime", "-callTime"]},
                    ),
                    _query("cursor", "`next` of the previous page.", {"type": "string"}),
                    _query(
                        "limit",
                        "Calls at most: 1-1,000 (default 100), up to 100,000 streamed.",
                        {"type": "integer", "minimum": 1, "maximum": 100000},
                    ),
                    _FIELDS,
                    _SCOPE,
                ],
                "responses": {
                    "200": {
                        "description": "A page of calls and the total matching.",
                        "content": {
                            "application/json": {"schema": _ref("CallsPage")},
                            **ndjson("CallRecord", "CallsEnd"),
                        },
                    },
                    **_problem_responses(400, 401, 429, 503),
                },
            }
        },
        "/api/v4/calls/{universalId}": {
            "get": {
                "operationId": "getCall",
                "summary": "One call",
                "parameters": [
                    {
                        "name": "universalId",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _FIELDS,
                    _SCOPE,
                ],
                "responses": {
                    "200": {
                        "description": "The call.",
                        "content": {"application/json": {"schema": _ref("CallRecord")}},
                    },
                    **_problem_responses(400, 401, 404, 429, 503),
                },
            }
        },
        "/api/v4/stats": {
            "get": {
                "operationId": "getStats",
                "summary": "Counts of calls per group",
                "description": (
                    "Calls, answered, unique, target, unique-target and talk seconds per group "
                    "of `by` (one or two of day, hour, source, campaign, utm_source, "
                    "utm_medium, utm_campaign, device; day and hour in the service zone); "
                    "without `by`, one group of everything."
                ),
                "parameters": [
                    _query(
                        "by",
                        "One or two group names, comma-separated (different; not day and hour).",
                        {"type": "string", "pattern": f"^{_BY_NAME}(,{_BY_NAME})?$"},
                    ),
                    *_FILTERS,
                    _SCOPE,
                ],
                "responses": {
                    "200": {
                        "description": "The groups, ordered by their keys.",
                        "content": {"application/json": {"schema": _ref("Stats")}},
                    },
                    **_problem_responses(400, 401, 429, 503),
                },
            }
        },
        "/api/v4/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    spec = {
        "openapi": "3.1.0",
        "info": {
            "title": "calltrack API v4",
            "version": __version__,
            "description": (
                "Calls of call tracking: a changes feed that gives each change once, in "
                "order, and calls with filters and stats. The same keys and access rules as "
                "the v3 API. Errors are RFC 9457 problem details."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": paths,
    }
    return msgspec.json.encode(spec)
