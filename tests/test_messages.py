"""The documented messages are written once, and the client gets them without the server."""

from __future__ import annotations

import subprocess
import sys

from calltrack import errors, messages
from calltrack.client import _errors as client_errors


def test_server_and_client_answer_and_recognise_every_message_of_the_contracts_table() -> None:
    server = {cls.message for cls in vars(errors).values() if _is_sub(cls, errors.ApiError)}
    client = set(client_errors.DOCUMENTED)
    table = {
        messages.FORMAT_NOT_AVAILABLE,
        messages.WRONG_VERSION,
        messages.USER_NOT_RECOGNIZED,
        messages.ENTITY_DOES_NOT_EXIST,
        messages.METHOD_DOES_NOT_EXIST,
        messages.INCORRECT_PAGE,
        messages.WRONG_START_DATE,
        messages.WRONG_END_DATE,
        messages.NO_ROWS_FOUND,
    }
    assert client == table
    assert table <= server
    for message in table:
        assert type(client_errors.api_error(message)).message == message


def test_the_client_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, calltrack.client\n"
        "print(' '.join(sorted(m.split('.')[0] if not m.startswith('calltrack.') else m"
        " for m in sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "calltrack.messages" in loaded
    for server_side in ("starlette", "uvicorn", "psycopg", "calltrack.api", "calltrack.store"):
        assert server_side not in loaded


def _is_sub(value: object, base: type) -> bool:
    return isinstance(value, type) and issubclass(value, base) and value is not base
