"""The export client: typed calls from any server that speaks the v3 protocol, and the
changes of API v4's feed.

    from calltrack.client import Client

    with Client("https://calls.example.com", "0123456789abcdef") as client:
        for call in client.iter_calls("2024-05-01", "2024-05-31"):
            print(call.universalId, call.callTime, call.duration)

``client.changes(after)`` yields what changed since a cursor (API v4). ``export_calls`` writes
a whole window to a CSV, JSON Lines, XLSX or Parquet file, resumably;
``calltrack export`` is the same from the command line. See docs/client.md.
"""

from __future__ import annotations

from calltrack.client._client import METHODS, Change, Changes, Client, DateLike, Method, Scope
from calltrack.client._errors import (
    ApiError,
    ClientError,
    ConnectionFailed,
    CursorExpired,
    EntityDoesNotExist,
    ExportError,
    FeedNotOffered,
    IncorrectPage,
    InternalServerError,
    InvalidResponse,
    MethodDoesNotExist,
    MissingExtra,
    NoRowsFound,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TypeNotAvailable,
    UnknownApiError,
    UserNotRecognized,
    WrongApiVersion,
    WrongEndDate,
    WrongStartDate,
)
from calltrack.client.export import ExportResult, Progress, export_calls
from calltrack.client.writers import FORMATS, Format
from calltrack.model import CallRecord, Hook

__all__ = [
    "FORMATS",
    "METHODS",
    "ApiError",
    "CallRecord",
    "Change",
    "Changes",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "CursorExpired",
    "DateLike",
    "EntityDoesNotExist",
    "ExportError",
    "ExportResult",
    "FeedNotOffered",
    "Format",
    "Hook",
    "IncorrectPage",
    "InternalServerError",
    "InvalidResponse",
    "Method",
    "MethodDoesNotExist",
    "MissingExtra",
    "NoRowsFound",
    "Progress",
    "Scope",
    "ServerError",
    "ServiceUnavailable",
    "TooManyRequests",
    "TypeNotAvailable",
    "UnknownApiError",
    "UserNotRecognized",
    "WrongApiVersion",
    "WrongEndDate",
    "WrongStartDate",
    "export_calls",
]
