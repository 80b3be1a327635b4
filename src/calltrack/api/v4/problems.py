"""RFC 9457 problem details: how v4 says what went wrong."""

from __future__ import annotations

from typing import Final

import msgspec
from starlette.responses import Response

PROBLEM_TYPE: Final = "application/problem+json"
TYPE_BASE: Final = "https://calltrack.dev/problems/"

_encode = msgspec.json.Encoder().encode


class Problem(Exception):
    """An answer that is not the resource: status, a short title, what exactly."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        parameter: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.parameter = parameter

    def response(self) -> Response:
        body: dict[str, object] = {
            "type": TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return Response(_encode(body), self.status, headers=self.headers, media_type=PROBLEM_TYPE)


def bad_parameter(name: str, detail: str) -> Problem:
    return Problem(400, "bad-parameter", "Bad parameter", f"{name}: {detail}", parameter=name)


def unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"www-authenticate": 'Bearer realm="calltrack"'},
    )


def not_found(detail: str) -> Problem:
    return Problem(404, "not-found", "Not found", detail)


def cursor_expired(detail: str) -> Problem:
    return Problem(410, "cursor-expired", "Cursor expired", detail)


def too_many_requests(retry_after: int) -> Problem:
    return Problem(
        429,
        "too-many-requests",
        "Too many requests",
        f"the key's request limit is reached; retry after {retry_after} s",
        headers={"retry-after": str(retry_after)},
    )


def unavailable(retry_after: int) -> Problem:
    return Problem(
        503,
        "unavailable",
        "Service unavailable",
        "the database is not reachable right now",
        headers={"retry-after": str(retry_after)},
    )
