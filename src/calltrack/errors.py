"""One exception tree for everything that can go wrong, each carrying its documented message.

    CalltrackError
    ├── ApiError                 a documented v3 answer (HTTP 200, the error envelope)
    │   ├── FormatNotAvailable   "Type to return is not available"
    │   ├── WrongVersion         "It is wrong API version"
    │   ├── UnknownKey           "User is not recognized"
    │   ├── UnknownEntity        "Entity does not exist"
    │   ├── UnknownMethod        "Method does not exist"
    │   ├── BadPage              "Incorrect page is set"
    │   ├── BadStart             "Start date has wrong type. ..."
    │   ├── BadEnd               "End date has wrong type. ..."
    │   ├── NoRows               "No rows found"
    │   ├── MissingCallId        "Call id is not set"                 (call/delete)
    │   ├── BadCallData          "Call data is not valid" + line, reason (call/put)
    │   ├── BodyTooLarge         413 "Request body is too large"       (call/put)
    │   └── HttpMethodNotAllowed 405 "HTTP method is not allowed for this method"
    ├── ServiceError             our failure, not the caller's (HTTP 5xx/429)
    │   ├── StoreUnavailable     503 "Service temporarily unavailable"
    │   └── RateLimited          429 "Too many requests"
    ├── InvalidRecord            a call record that cannot be stored (reason)
    ├── ImportRejected           a whole import file refused (line or index, and reason)
    ├── UnreadableFile           an import file that cannot be opened or read
    └── AdminError               an admin command that cannot be done (CLI exit 1)
        ├── NotFound
        └── Conflict

The API maps ``ApiError`` and ``ServiceError`` to answers in one place (``api.app``); the CLI
prints any ``CalltrackError`` and exits 1.
"""

from __future__ import annotations

from typing import ClassVar


class CalltrackError(Exception):
    """Base of every error this package raises on purpose."""


class ApiError(CalltrackError):
    """A documented v3 error answer."""

    message: ClassVar[str]
    status_code: ClassVar[int] = 200  # the contract answers its errors with 200

    def __init__(self) -> None:
        super().__init__(self.message)

    def details(self) -> dict[str, object]:
        """More keys for ``inbound`` beside ``error``, where the error has them."""
        return {}


class FormatNotAvailable(ApiError):
    message = "Type to return is not available"


class WrongVersion(ApiError):
    message = "It is wrong API version"


class UnknownKey(ApiError):
    message = "User is not recognized"


class UnknownEntity(ApiError):
    message = "Entity does not exist"


class UnknownMethod(ApiError):
    message = "Method does not exist"


class BadPage(ApiError):
    message = "Incorrect page is set"


class BadStart(ApiError):
    message = "Start date has wrong type. Possible format is 'Y-m-d' or timestamp"


class BadEnd(ApiError):
    message = "End date has wrong type. Possible format is 'Y-m-d' or timestamp"


class NoRows(ApiError):
    message = "No rows found"


class MissingCallId(ApiError):
    message = "Call id is not set"


class BadCallData(ApiError):
    message = "Call data is not valid"

    def __init__(self, line: int, reason: str, index: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.reason = reason
        self.index = index  # the record's 0-based index when the body is a JSON array

    def details(self) -> dict[str, object]:
        where: dict[str, object] = {"line": self.line}
        if self.index is not None:
            where["index"] = self.index
        return {**where, "reason": self.reason}


class BodyTooLarge(ApiError):
    message = "Request body is too large"
    status_code = 413


class HttpMethodNotAllowed(ApiError):
    message = "HTTP method is not allowed for this method"
    status_code = 405


class ServiceError(CalltrackError):
    """Our failure, answered with an HTTP error status and the same envelope."""

    message: ClassVar[str]
    status_code: ClassVar[int]

    def __init__(self, detail: str = "", retry_after: int | None = None) -> None:
        super().__init__(detail or self.message)
        self.retry_after = retry_after


class StoreUnavailable(ServiceError):
    message = "Service temporarily unavailable"
    status_code = 503


class RateLimited(ServiceError):
    message = "Too many requests"
    status_code = 429


class InvalidRecord(CalltrackError):
    """A call record that cannot be stored; the message is the reason."""


class ImportRejected(CalltrackError):
    """An import file refused as a whole because of one record.

    A record of JSON Lines is named by its line; one of a JSON array by its place, as
    "record 3 (index 2)", since an array often sits on one line (``line`` is still where the
    record starts).
    """

    def __init__(self, line: int, reason: str, index: int | None = None) -> None:
        where = f"line {line}" if index is None else f"record {index + 1} (index {index})"
        super().__init__(f"{where}: {reason}")
        self.line = line
        self.reason = reason
        self.index = index


class UnreadableFile(CalltrackError):
    """An import file that cannot be opened or read."""


class AdminError(CalltrackError):
    """An admin operation that cannot be done as asked."""


class NotFound(AdminError):
    """The named account, key, role or grant does not exist."""


class Conflict(AdminError):
    """The operation would duplicate something that must be unique."""
