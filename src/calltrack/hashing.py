"""What the store keeps instead of a secret (API keys, telephony bearer secrets)."""

from __future__ import annotations

import hashlib


def hash_secret(secret: str) -> str:
    """SHA-256, hex. Secrets here are long random strings, not passwords, so a fast hash is
    enough: no dictionary to guess from. Lookups go by hash, so checking a presented secret
    never compares the secret itself."""
    return hashlib.sha256(secret.encode()).hexdigest()
