"""The documented error messages of the v3 API, written once.

The server answers them (``calltrack.errors``) and the export client recognises them
(``calltrack.client``); both import them from here, so they cannot drift apart, and the client
needs nothing of the server's web stack.
"""

from __future__ import annotations

from typing import Final

# The contract's error table, in its order (answered with HTTP 200 in the envelope).
FORMAT_NOT_AVAILABLE: Final = "Type to return is not available"
WRONG_VERSION: Final = "It is wrong API version"
USER_NOT_RECOGNIZED: Final = "User is not recognized"
ENTITY_DOES_NOT_EXIST: Final = "Entity does not exist"
METHOD_DOES_NOT_EXIST: Final = "Method does not exist"
INCORRECT_PAGE: Final = "Incorrect page is set"
WRONG_START_DATE: Final = "Start date has wrong type. Possible format is 'Y-m-d' or timestamp"
WRONG_END_DATE: Final = "End date has wrong type. Possible format is 'Y-m-d' or timestamp"
NO_ROWS_FOUND: Final = "No rows found"

# The writes (call/put, call/delete).
CALL_ID_NOT_SET: Final = "Call id is not set"
CALL_DATA_NOT_VALID: Final = "Call data is not valid"
BODY_TOO_LARGE: Final = "Request body is too large"  # HTTP 413
HTTP_METHOD_NOT_ALLOWED: Final = "HTTP method is not allowed for this method"  # HTTP 405

# Our failures, not the caller's.
SERVICE_UNAVAILABLE: Final = "Service temporarily unavailable"  # HTTP 503
TOO_MANY_REQUESTS: Final = "Too many requests"  # HTTP 429
INTERNAL_ERROR: Final = "Internal error"  # HTTP 500, with a request id
