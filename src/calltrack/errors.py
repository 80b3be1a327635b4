"""One exception tree for everything that can go wrong, each carrying its documented message.

The messages are written once, in ``calltrack.messages`` (named below), which the client
shares.

    CalltrackError
    ├── ApiError                 a documented v3 answer (HTTP 200, the error envelope)
    │   ├── FormatNotAvailable   FORMAT_NOT_AVAILABLE
    │   ├── WrongVersion         WRONG_VERSION
    │   ├── UnknownKey           USER_NOT_RECOGNIZED
    │   ├── UnknownEntity        ENTITY_DOES_NOT_EXIST
    │   ├── UnknownMethod        METHOD_DOES_NOT_EXIST
    │   ├── BadPage              INCORRECT_PAGE
    │   ├── BadStart             WRONG_START_DATE
    │   ├── BadEnd               WRONG_END_DATE
    │   ├── NoRows               NO_ROWS_FOUND
    │   ├── MissingCallId        CALL_ID_NOT_SET (call/delete)
    │   ├── BadCallData          CALL_DATA_NOT_VALID + line, reason (call/put)
    │   ├── BodyTooLarge         413 BODY_TOO_LARGE (call/put)
    │   └── HttpMethodNotAllowed 405 HTTP_METHOD_NOT_ALLOWED
    ├── ServiceError             our failure, not the caller's (HTTP 5xx/429)
    │   ├── StoreUnavailable     503 SERVICE_UNAVAILABLE
    │   └── RateLimited          429 TOO_MANY_REQUESTS
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

from calltrack import messages


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
    message = messages.FORMAT_NOT_AVAILABLE


class WrongVersion(ApiError):
    message = messages.WRONG_VERSION


class UnknownKey(ApiError):
    message = messages.USER_NOT_RECOGNIZED


class UnknownEntity(ApiError):
    message = messages.ENTITY_DOES_NOT_EXIST


class UnknownMethod(ApiError):
    message = messages.METHOD_DOES_NOT_EXIST


class BadPage(ApiError):
    message = messages.INCORRECT_PAGE


class BadStart(ApiError):
    message = messages.WRONG_START_DATE


class BadEnd(ApiError):
    message = messages.WRONG_END_DATE


class NoRows(ApiError):
    message = messages.NO_ROWS_FOUND


class MissingCallId(ApiError):
    message = messages.CALL_ID_NOT_SET


class BadCallData(ApiError):
    message = messages.CALL_DATA_NOT_VALID

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
    message = messages.BODY_TOO_LARGE
    status_code = 413


class HttpMethodNotAllowed(ApiError):
    message = messages.HTTP_METHOD_NOT_ALLOWED
    status_code = 405


class ServiceError(CalltrackError):
    """Our failure, answered with an HTTP error status and the same envelope."""

    message: ClassVar[str]
    status_code: ClassVar[int]

    def __init__(self, detail: str = "", retry_after: int | None = None) -> None:
        super().__init__(detail or self.message)
        self.retry_after = retry_after


class StoreUnavailable(ServiceError):
    message = messages.SERVICE_UNAVAILABLE
    status_code = 503

    @property
    def conflicted(self) -> bool:
        """The database rolled the transaction back for its conflict with another one (a
        deadlock, a serialization failure; SQLSTATE 40P01, 40001): unlike a store that is
        down, trying it again at once, alone, is likely to succeed."""
        return getattr(self.__cause__, "sqlstate", None) in ("40P01", "40001")


class RateLimited(ServiceError):
    message = messages.TOO_MANY_REQUESTS
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
