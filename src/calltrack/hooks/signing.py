"""Signatures as the Standard Webhooks specification defines them.

The signed content is ``{webhook-id}.{webhook-timestamp}.{payload}``, signed with
HMAC-SHA256 under the secret's 32 random bytes; the header is ``v1,<base64>``, and several
signatures (during a secret's rotation) are separated by spaces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Final

PREFIX: Final = "whsec_"


def new_secret() -> str:
    """A signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret_keys: Iterable[bytes], message_id: str, timestamp: int, payload: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,`` signature per key, space-separated."""
    content = f"{message_id}.{timestamp}.".encode() + payload
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        for key in secret_keys
    )
