"""Who is signed in to the console: a signed session cookie, its CSRF token, sign-in limits.

The cookie holds the key's id (never the key), whether it is a role key, and a random nonce,
signed with itsdangerous and stamped with the time it was made; it is refused past
``CALLTRACK_CONSOLE_SESSION_HOURS``. The key behind it is looked up again on every request, so
a revoked key or grant ends its sessions at once. The CSRF token of a session is an HMAC of
its nonce: forms carry it, and a POST without it (or with another session's) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE: Final = "calltrack_console"
SIGN_IN_COOKIE: Final = "calltrack_console_form"  # the sign-in form's nonce
LANGUAGE_COOKIE: Final = "calltrack_lang"
PATH: Final = "/console"
SIGN_IN_WINDOW: Final = 15 * 60  # seconds over which failed sign-ins of an IP are counted
_SALT: Final = "calltrack-console-session"


@dataclass(frozen=True, slots=True)
class Session:
    key_id: int
    role_key: bool
    nonce: str  # new at every sign-in: the session's CSRF token derives from it


class SessionSigner:
    """Signs sessions into cookie values and reads them back."""

    def __init__(self, secret: str, max_age_seconds: float) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self._csrf_key = hashlib.sha256(("csrf:" + secret).encode()).digest()
        self.max_age = int(max_age_seconds)

    def new(self, key_id: int, role_key: bool) -> tuple[Session, str]:
        """A new session of a key and its cookie value."""
        session = Session(key_id, role_key, secrets.token_urlsafe(16))
        value = self._serializer.dumps([session.key_id, int(session.role_key), session.nonce])
        return session, value

    def read(self, value: str | None) -> Session | None:
        """The session in a cookie value; None when absent, forged, malformed or expired."""
        if not value:
            return None
        try:
            fields = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:  # SignatureExpired is one too
            return None
        if (
            not isinstance(fields, list)
            or len(fields) != 3
            or not isinstance(fields[0], int)
            or fields[1] not in (0, 1)
            or not isinstance(fields[2], str)
        ):
            return None
        return Session(fields[0], bool(fields[1]), fields[2])

    def form_token(self, nonce: str) -> str:
        """The CSRF token of forms shown with ``nonce``: a session's, or the sign-in form's
        (whose nonce is in a cookie of its own: nobody is signed in yet)."""
        return hmac.new(self._csrf_key, nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_token(self, session: Session) -> str:
        return self.form_token(session.nonce)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf_token(session), token)


def new_secret() -> str:
    return secrets.token_urlsafe(32)
