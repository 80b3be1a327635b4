"""The client's exception tree: every way a pull can fail, each one catchable on its own.

    ClientError                      (a CalltrackError: the CLI prints any of them)
    ├── ApiError                     a documented v3 error answer (HTTP 200, the error envelope)
    │   ├── TypeNotAvailable         FORMAT_NOT_AVAILABLE
    │   ├── WrongApiVersion          WRONG_VERSION
    │   ├── UserNotRecognized        USER_NOT_RECOGNIZED
    │   ├── EntityDoesNotExist       ENTITY_DOES_NOT_EXIST
    │   ├── MethodDoesNotExist       METHOD_DOES_NOT_EXIST
    │   ├── IncorrectPage            INCORRECT_PAGE
    │   ├── WrongStartDate           WRONG_START_DATE
    │   ├── WrongEndDate             WRONG_END_DATE
    │   ├── NoRowsFound              NO_ROWS_FOUND (the client answers [] instead of raising)
    │   ├── UnknownApiError          an envelope with a message the contract does not list
    │   └── CursorExpired            v4: 410, the feed's cursor is too old; start over
    ├── ServerError                  HTTP 5xx or 429, still failing after every retry
    │   ├── ServiceUnavailable       503 SERVICE_UNAVAILABLE
    │   ├── TooManyRequests          429 TOO_MANY_REQUESTS
    │   └── InternalServerError      500 INTERNAL_ERROR (with the server's request id)
    ├── ConnectionFailed             no answer: refused, reset, dropped mid-body, timed out
    ├── InvalidResponse              an answer that is not the v3 protocol (status, JSON, record)
    │   └── FeedNotOffered           v4: the server has no changes feed (HTTP 404): v3 only
    └── ExportError                  an export that cannot go on as asked (state, output, options)
        └── MissingExtra             the output format needs an optional extra that is absent

``ApiError`` messages are the server's own text (``calltrack.messages``, which the server
answers too), so ``str(error)`` is what the server said.
"""

from __future__ import annotations

from typing import ClassVar

from calltrack import messages
from calltrack.errors import CalltrackError


class ClientError(CalltrackError):
    """Base of every error the client raises."""


class ApiError(ClientError):
    """A documented v3 error answer; ``message`` is the server's text."""

    message: ClassVar[str] = ""

    def __init__(self, message: str | None = None) -> None:
        text = message if message is not None else type(self).message
        super().__init__(text)
        self.server_message = text


class TypeNotAvailable(ApiError):
    message = messages.FORMAT_NOT_AVAILABLE


class WrongApiVersion(ApiError):
    message = messages.WRONG_VERSION


class UserNotRecognized(ApiError):
    message = messages.USER_NOT_RECOGNIZED


class EntityDoesNotExist(ApiError):
    message = messages.ENTITY_DOES_NOT_EXIST


class MethodDoesNotExist(ApiError):
    message = messages.METHOD_DOES_NOT_EXIST


class IncorrectPage(ApiError):
    message = messages.INCORRECT_PAGE


class WrongStartDate(ApiError):
    message = messages.WRONG_START_DATE


class WrongEndDate(ApiError):
    message = messages.WRONG_END_DATE


class NoRowsFound(ApiError):
    message = messages.NO_ROWS_FOUND


class UnknownApiError(ApiError):
    """An error envelope whose message is none of the documented ones."""


class CursorExpired(ApiError):
    """v4: the changes feed answered 410: the cursor is older than the changes the server
    keeps (``CALLTRACK_CHANGES_DAYS``). Start over without ``after`` (a full walk)."""

    message = (
        "the cursor has expired (the server no longer keeps the changes after it): "
        "start over from the beginning, without a cursor"
    )


DOCUMENTED: dict[str, type[ApiError]] = {
    cls.message: cls
    for cls in (
        TypeNotAvailable,
        WrongApiVersion,
        UserNotRecognized,
        EntityDoesNotExist,
        MethodDoesNotExist,
        IncorrectPage,
        WrongStartDate,
        WrongEndDate,
        NoRowsFound,
    )
}


def api_error(message: str) -> ApiError:
    """The exception for an envelope's ``inbound.error``."""
    cls = DOCUMENTED.get(message)
    return cls() if cls is not None else UnknownApiError(message)


class ServerError(ClientError):
    """The server failed (5xx) or refused for now (429), and retrying did not help."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        detail = f"HTTP {status_code}: {message}"
        if request_id:
            detail += f" (request id {request_id})"
        super().__init__(detail)
        self.server_message = message
        self.status_code = status_code
        self.retry_after = retry_after
        self.request_id = request_id


class ServiceUnavailable(ServerError):
    """503: the server's database is unreachable for now."""


class TooManyRequests(ServerError):
    """429: the per-key rate limit."""


class InternalServerError(ServerError):
    """500: something unexpected on the server; quote ``request_id`` to its operator."""


def server_error(
    status_code: int, message: str, retry_after: float | None, request_id: str | None
) -> ServerError:
    cls: type[ServerError] = {
        503: ServiceUnavailable,
        429: TooManyRequests,
        500: InternalServerError,
    }.get(status_code, ServerError)
    return cls(message, status_code=status_code, retry_after=retry_after, request_id=request_id)


class ConnectionFailed(ClientError):
    """No complete answer: connection refused or reset, body cut short, or a timeout."""


class InvalidResponse(ClientError):
    """An answer outside the v3 protocol: unexpected status, not JSON, or an invalid record."""


class FeedNotOffered(InvalidResponse):
    """v4: the server answers 404 for the changes feed: it speaks v3 only."""


class ExportError(ClientError):
    """An export that cannot go on as asked; the message says what to do."""


class MissingExtra(ExportError):
    """The output format needs an optional dependency: ``pip install 'calltrack[EXTRA]'``."""

    def __init__(self, fmt: str, extra: str, module: str) -> None:
        super().__init__(
            f"the {fmt} format needs the optional package {module!r}: "
            f"install it with pip install 'calltrack[{extra}]'"
        )
        self.format = fmt
        self.extra = extra
