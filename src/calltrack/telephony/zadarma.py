"""Zadarma PBX notifications -> :class:`TelephonyEvent`: the ``Signature`` check and the mapping.

Pure: no web framework, no store. The endpoint hands over the decoded form fields and the
``Signature`` header; this module says whether they are genuine and what event they are.

What Zadarma sends, and where that was read
-------------------------------------------
Source: Zadarma's public PHP client library, repository ``zadarma/user-api-v1``:

- ``lib/Webhook/AbstractNotify.php``: the event names (form field ``event``): ``NOTIFY_START``,
  ``NOTIFY_INTERNAL``, ``NOTIFY_ANSWER``, ``NOTIFY_END``, ``NOTIFY_OUT_START``,
  ``NOTIFY_OUT_END``, ``NOTIFY_RECORD``, ``NOTIFY_IVR`` (and ``SPEECH_RECOGNITION``, ``SMS``).
- ``lib/Webhook/Notify*.php``: each event's form fields and ``getSignatureString()``, the text
  that is signed, a plain concatenation without separators:

  - NOTIFY_START, NOTIFY_INTERNAL, NOTIFY_END, and NOTIFY_IVR (a subclass of NotifyStart):
    ``caller_id + called_did + call_start``
  - NOTIFY_ANSWER: ``caller_id + destination + call_start``
  - NOTIFY_OUT_START, NOTIFY_OUT_END: ``internal + destination + call_start``
  - NOTIFY_RECORD: ``pbx_call_id + call_id_with_rec``

  Fields: NOTIFY_START/NOTIFY_INTERNAL: ``call_start``, ``pbx_call_id``, ``caller_id``,
  ``called_did`` (INTERNAL also ``internal``, the extension being rung). NOTIFY_ANSWER:
  ``caller_id``, ``destination`` (who answered), ``call_start``, ``pbx_call_id``, ``internal``
  (optional). NOTIFY_END: those of START plus ``internal`` (optional), ``duration`` (seconds),
  ``disposition`` (``answered``, ``busy``, ``cancel``, ``no answer``, ``failed``, ``no money``,
  ``unallocated number``, ``no limit``, ``no day limit``, ``line limit``,
  ``no money, no limit``), ``status_code`` (a Q.931 cause code), ``is_recorded`` (``1``/``0``)
  and ``call_id_with_rec``. NOTIFY_RECORD: ``call_id_with_rec`` and ``pbx_call_id``.
- ``lib/Client.php``, ``encodeSignature()``: ``base64_encode(hash_hmac('sha1', $text,
  $secret))`` with the account's API secret. PHP's ``hash_hmac`` returns the *lowercase hex*
  digest unless its fourth argument is true, so the header is the base64 of the 40 hex
  characters (56 characters ending in ``=``), not of the 20 raw bytes.
- ``lib/Api.php``, ``getWebhookEvent()``: reads the ``Signature`` request header, builds the
  event object from the POST fields (a missing field is PHP ``null``, which concatenates as
  the empty string) and compares.
- ``examples/callinfo_callback.php``: the same NOTIFY_START formula written out, the sender's
  address ``185.45.152.42``, and the link check: Zadarma first requests the notification URL
  with a ``zd_echo`` query parameter and expects its value back as the body
  (``if (isset($_GET['zd_echo'])) exit($_GET['zd_echo']);``). :func:`echo_reply` does that.
  Its comment also says the header is sent only once the account has an API key and secret.

Corroborated by a reseller's copy of Zadarma's notification documentation (NOTIFY_START
formula, same field list) and by independent integrations that compare
``b64decode(Signature)`` with ``hmac(secret, text, sha1).hexdigest()``.

What the signature does not do: it covers only the fields above, so NOTIFY_END's
``duration`` and ``disposition`` are not protected, and it has no time stamp or nonce, so a
captured notification can be replayed (the service's idempotency makes that harmless).

Not confirmed from the material read, and what this module assumes instead:

- The time zone of ``call_start`` (``YYYY-MM-DD HH:MM:SS``, no offset). The API's
  ``info/timezone`` method (``lib/Response/Timezone.php``) reports the account's zone, and the
  notification times are taken to be in it; :func:`parse` takes the zone as a parameter and
  defaults to Europe/Moscow (the service's own default zone). In a zone with daylight saving,
  a repeated hour reads as its first occurrence.
- Whether NOTIFY_END's ``duration`` is the talk time or the whole call. It is taken as the
  talk time of an answered call; an unanswered call gets ``talk_seconds`` 0 whatever it says.
- Zadarma's documentation pages in the searched material showed only NOTIFY_START in full;
  the other events' fields and formulas come from the library alone.

Choices
-------
- Every Zadarma event's ``at`` is the call's start (``call_start``): it is the only time the
  PBX sends, and the one that decides attribution. NOTIFY_RECORD carries no time at all; its
  ``at`` is the moment of parsing (``now``), so a redelivered recording differs only there.
- ``status_code`` is a Q.931 cause, not a SIP status: the SIP status fields stay empty and the
  service derives them from the disposition, as the contract says.
- The recording: Zadarma gives no URL in a notification, only ``call_id_with_rec``; a link
  (temporary, 180 s to 60 days) needs an authenticated API call, ``pbx/record/request`` with
  that ``call_id`` (``lib/Api.php``, ``getPbxRecord()``). A pure adapter cannot make it, and a
  link fetched now would expire in the stored record, so ``recording_url`` is the reference
  ``zadarma-record:<call_id_with_rec>`` (see :func:`recording_reference`), for the service,
  which holds the account's API key, to resolve when the recording is wanted. NOTIFY_END of a
  recorded call carries the same reference, so the record has it even if NOTIFY_RECORD never
  comes.
- Mapped: NOTIFY_START -> ``call.started``, NOTIFY_ANSWER -> ``call.answered``, NOTIFY_END ->
  ``call.ended``, NOTIFY_RECORD -> ``call.recording``. Other events (an extension ringing,
  outgoing calls, voice menus, SMS) are genuine but say nothing about a tracked incoming call:
  :func:`parse` returns ``None`` for them.
- A disposition outside Zadarma's list becomes ``failed``: the call did end, and refusing the
  notification would lose it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, tzinfo
from typing import Final
from zoneinfo import ZoneInfo

from calltrack.telephony.events import TelephonyEvent
from calltrack.tracking.numbers import MAX_TEXT_LENGTH, normalise

START: Final = "NOTIFY_START"
INTERNAL: Final = "NOTIFY_INTERNAL"
ANSWER: Final = "NOTIFY_ANSWER"
END: Final = "NOTIFY_END"
OUT_START: Final = "NOTIFY_OUT_START"
OUT_END: Final = "NOTIFY_OUT_END"
RECORD: Final = "NOTIFY_RECORD"
IVR: Final = "NOTIFY_IVR"

# The fields each event's signature concatenates, in order (lib/Webhook/Notify*.php).
SIGNED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    START: ("caller_id", "called_did", "call_start"),
    INTERNAL: ("caller_id", "called_did", "call_start"),
    IVR: ("caller_id", "called_did", "call_start"),
    END: ("caller_id", "called_did", "call_start"),
    ANSWER: ("caller_id", "destination", "call_start"),
    OUT_START: ("internal", "destination", "call_start"),
    OUT_END: ("internal", "destination", "call_start"),
    RECORD: ("pbx_call_id", "call_id_with_rec"),
}

DEFAULT_ZONE: Final = ZoneInfo("Europe/Moscow")
RECORDING_SCHEME: Final = "zadarma-record"

# Zadarma's dispositions -> the contract's five. "no money, no limit" is spelt with a comma in
# the library and without one in some copies of the documentation: both are listed.
DISPOSITIONS: Final[Mapping[str, str]] = {
    "answered": "answered",
    "busy": "busy",
    "cancel": "cancelled",
    "no answer": "no_answer",
    "failed": "failed",
    "no money": "failed",
    "unallocated number": "failed",
    "no limit": "failed",
    "no day limit": "failed",
    "line limit": "failed",
    "no money, no limit": "failed",
    "no money no limit": "failed",
}

# Bounds that keep a hostile form cheap and every stored value sane. No genuine field is
# longer than a call id; a call lasting a week is not a call.
MAX_FIELD_LENGTH: Final = 128
MAX_SIGNATURE_LENGTH: Final = 128
MAX_TALK_SECONDS: Final = 7 * 24 * 3600
MAX_ECHO_LENGTH: Final = 256

_CALL_START_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\Z")
# Call ids are Zadarma's ("in_2c1f...", "1411559383.3478853"): letters, digits, . _ - only.
_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]+\Z")
_DIGITS_RE: Final = re.compile(r"\d+\Z", re.ASCII)
# Visible ASCII without the characters markup is made of.
_ECHO_RE: Final = re.compile(r"[!#-%(-;=?-~]+\Z")


def signed_text(form: Mapping[str, str]) -> str | None:
    """The text Zadarma signs for this notification, or None for an event it does not sign.

    A field that is absent counts as empty, as in the library (PHP ``null`` . ``"x"``).
    """
    fields = SIGNED_FIELDS.get(form.get("event", ""))
    if fields is None:
        return None
    return "".join(form.get(name, "") for name in fields)


def sign(text: str, secret: str) -> str:
    """Zadarma's signature of ``text``: base64 of the lowercase hex HMAC-SHA1 with ``secret``."""
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(digest.encode("ascii")).decode("ascii")


def verify(form: Mapping[str, str], signature: str, secret: str) -> bool:
    """Whether ``signature`` (the ``Signature`` header) is Zadarma's for ``form``.

    False for an empty secret or signature, an event without a known formula, or any field
    that is not text; the comparison takes the same time wherever the strings differ.
    """
    if not secret or not signature or len(signature) > MAX_SIGNATURE_LENGTH:
        return False
    if not all(isinstance(value, str) for value in form.values()):
        return False
    text = signed_text(form)
    if text is None:
        return False
    expected = sign(text, secret).encode("ascii")
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace"))


def echo_reply(query: Mapping[str, str]) -> str | None:
    """The body for Zadarma's link check: the ``zd_echo`` value, or None if there is none.

    Zadarma requests the URL with ``?zd_echo=<random>`` and expects the value back. Only
    visible ASCII up to 256 characters and without ``< > & " '`` is echoed, so the endpoint
    never reflects markup or a large body; serve it as ``text/plain`` all the same.
    """
    value = query.get("zd_echo")
    if not isinstance(value, str) or len(value) > MAX_ECHO_LENGTH or not _ECHO_RE.match(value):
        return None
    return value


def recording_reference(call_id_with_rec: str) -> str:
    """``zadarma-record:<id>``: what the service resolves to a link through Zadarma's API."""
    return f"{RECORDING_SCHEME}:{_call_id(call_id_with_rec, 'call_id_with_rec')}"


def parse(
    form: Mapping[str, str],
    zone: tzinfo = DEFAULT_ZONE,
    now: int | None = None,
) -> TelephonyEvent | None:
    """One notification's fields -> its event; None for a notification that is not one of the
    four (NOTIFY_START, NOTIFY_ANSWER, NOTIFY_END, NOTIFY_RECORD).

    ``zone`` is the Zadarma account's time zone, in which ``call_start`` is written; ``now``
    (unix seconds, default the clock) is the time stamped on NOTIFY_RECORD, which has none.
    Check the signature with :func:`verify` first: this function trusts nothing but does not
    authenticate.

    Raises ValueError, its message naming the field, for a missing or malformed field.
    """
    event = _text(form, "event")
    if event == RECORD:
        return TelephonyEvent(
            event="call.recording",
            call_id=_call_id(_text(form, "pbx_call_id"), "pbx_call_id"),
            at=int(time.time()) if now is None else now,
            recording_url=recording_reference(_text(form, "call_id_with_rec")),
        )
    if event not in (START, ANSWER, END):
        return None
    # What every call notification carries, read once.
    call = TelephonyEvent(
        event="call.started",
        call_id=_call_id(_text(form, "pbx_call_id"), "pbx_call_id"),
        at=_call_start(form, zone),
        caller=_number(form, "caller_id", optional=True),
    )
    if event == START:
        return replace(call, called=_number(form, "called_did"))
    if event == ANSWER:
        # Who answered: a phone number the call went on to, or an extension.
        answered_by = _number(form, "destination", optional=True)
        return replace(
            call,
            event="call.answered",
            forwarded_to=answered_by or _number(form, "internal", optional=True),
        )
    return _ended(form, call)


def _ended(form: Mapping[str, str], call: TelephonyEvent) -> TelephonyEvent:
    disposition = _disposition(_text(form, "disposition"))
    # An unanswered call has no talk time to lose: a missing duration is 0 there.
    duration = _text(form, "duration", optional=disposition != "answered") or "0"
    if not _DIGITS_RE.match(duration):
        raise ValueError(f"`duration` is {duration!r}, expected whole seconds")
    if len(duration) > len(str(MAX_TALK_SECONDS)) or int(duration) > MAX_TALK_SECONDS:
        raise ValueError(f"`duration` is {duration}, more than {MAX_TALK_SECONDS} seconds")
    recorded = _text(form, "is_recorded", optional=True) == "1"
    rec_id = _text(form, "call_id_with_rec", optional=True)
    talk = int(duration) if disposition == "answered" else 0
    return replace(
        call,
        event="call.ended",
        # Zadarma stamps every notification with the call's start; the event's time is when
        # it happened, the end (the ring before the talk is not told).
        at=call.at + talk,
        called=_number(form, "called_did"),
        forwarded_to=_number(form, "internal", optional=True),
        talk_seconds=talk,
        disposition=disposition,
        recording_url=recording_reference(rec_id) if recorded and rec_id else "",
    )


def _text(form: Mapping[str, str], name: str, *, optional: bool = False) -> str:
    """A field's value, stripped; ValueError if it is missing (unless optional) or too long."""
    value = form.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return ""
        raise ValueError(f"`{name}` is missing")
    if not isinstance(value, str):
        raise ValueError(f"`{name}` is not text")
    if len(value) > MAX_FIELD_LENGTH:
        raise ValueError(f"`{name}` is longer than {MAX_FIELD_LENGTH} characters")
    return value.strip()


def _call_id(value: str, name: str) -> str:
    if len(value) > MAX_FIELD_LENGTH:
        raise ValueError(f"`{name}` is longer than {MAX_FIELD_LENGTH} characters")
    if not _ID_RE.match(value):
        raise ValueError(f"`{name}` is {value!r}, expected letters, digits, '.', '_' or '-'")
    return value


def _call_start(form: Mapping[str, str], zone: tzinfo) -> int:
    value = _text(form, "call_start")
    if not _CALL_START_RE.match(value):
        raise ValueError(f"`call_start` is {value!r}, expected YYYY-MM-DD HH:MM:SS")
    try:
        at = int(datetime.fromisoformat(value).replace(tzinfo=zone).timestamp())
    except (ValueError, OverflowError):
        raise ValueError(f"`call_start` is {value!r}: there is no such date or time") from None
    if at < 0:
        raise ValueError(f"`call_start` is {value!r}, before 1970")
    return at


def _number(form: Mapping[str, str], name: str, *, optional: bool = False) -> str:
    """A number as the service keeps it: normalised when it is a phone number, its digits
    otherwise (an extension such as ``100``; a hidden caller gives ``""``, and a call from a
    hidden number is still a call, so ``caller_id`` may be empty)."""
    value = _text(form, name, optional=optional)
    if len(value) > MAX_TEXT_LENGTH:
        raise ValueError(f"`{name}` is longer than {MAX_TEXT_LENGTH} characters")
    try:
        return normalise(value)
    except ValueError:
        return "".join(char for char in value if "0" <= char <= "9")


def _disposition(value: str) -> str:
    return DISPOSITIONS.get(" ".join(value.lower().split()), "failed")
