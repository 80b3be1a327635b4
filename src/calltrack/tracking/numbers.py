"""Phone numbers as the service keeps them (digits only) and as a campaign displays them.

Pure functions: no store, no web framework. Every input is bounded, and anything that is not
a phone number is refused with a ``ValueError`` whose message says what is wrong.
"""

from __future__ import annotations

from typing import Final

MIN_DIGITS: Final = 10
# E.164: a country code and subscriber number together have at most 15 digits.
MAX_DIGITS: Final = 15
# Longer text cannot be a phone number written with separators; refusing it early keeps a
# hostile input from costing more than a glance.
MAX_TEXT_LENGTH: Final = 64
MAX_FORMAT_LENGTH: Final = 64
# The format's placeholder for one digit of the number (Latin capital X only).
MARK: Final = "X"
# The fewest marks a format may have: the shortest subscriber numbers in use behind a fixed
# area code have 5 digits (a small Russian town: "+7 (34345) X-XX-XX"); fewer marks is a typo
# and would show visitors no number they could dial.
MIN_MARKS: Final = 5

_DIGITS: Final = frozenset("0123456789")
# What people put between digits: spaces (including the no-break spaces of typeset pages),
# brackets, dots, slashes, and hyphens and dashes of every kind.
_SEPARATORS: Final = frozenset(" \t\u00a0\u2007\u202f()./-\u2010\u2011\u2012\u2013\u2014\u2212")


def normalise(text: str) -> str:
    """A phone number written any usual way -> its digits, Russian numbers as ``7XXXXXXXXXX``.

    ``8 (495) 123-45-67``, ``+7 495 123 45 67`` and ``74951234567`` all give ``74951234567``.
    Without a leading ``+``: 11 digits starting with 8 are a Russian national number (the 8
    becomes 7); 10 digits are a Russian number written without its country code (7 is put in
    front, as the Russian PBXs and tracking services this one replaces do); a leading ``00``
    or ``810`` (the international and Russian long-distance prefixes) is dropped. With a
    ``+`` the digits are taken as they are. The result has 10 to 15 digits.

    Raises ValueError for anything else: letters, a ``+`` that does not lead, fewer than 10
    or more than 15 digits, text longer than 64 characters.
    """
    if len(text) > MAX_TEXT_LENGTH:
        raise ValueError(f"not a phone number: longer than {MAX_TEXT_LENGTH} characters")
    stripped = text.strip()
    plus = stripped.startswith("+")
    body = stripped[1:] if plus else stripped
    digits = []
    for char in body:
        if char in _DIGITS:
            digits.append(char)
        elif char not in _SEPARATORS:
            raise ValueError(
                f"not a phone number: {text!r} has {char!r}; expected digits, "
                "a leading +, spaces, brackets, dots or hyphens"
            )
    number = "".join(digits)
    if not plus:
        number = _national(number)
    if not MIN_DIGITS <= len(number) <= MAX_DIGITS:
        raise ValueError(
            f"not a phone number: {text!r} has {len(number)} digits, "
            f"expected {MIN_DIGITS} to {MAX_DIGITS}"
        )
    return number


def _national(number: str) -> str:
    """Digits dialled without ``+`` -> the international form."""
    if number.startswith("00"):
        return number[2:]
    # 8-10-<country>-<number>: the Russian way to dial abroad; longer than a national number.
    if number.startswith("810") and len(number) > 11:
        return number[3:]
    if len(number) == 11 and number.startswith("8"):
        return "7" + number[1:]
    if len(number) == 10:
        return "7" + number
    return number


def check_format(fmt: str) -> str:
    """The display format, checked: at most 64 printable characters, at least 5 ``X`` marks
    unless empty (empty means ``+`` and the digits). Returns it; raises ValueError otherwise.
    """
    if len(fmt) > MAX_FORMAT_LENGTH:
        raise ValueError(f"display format: longer than {MAX_FORMAT_LENGTH} characters")
    if not fmt.isprintable():
        raise ValueError("display format: has a control character")
    if fmt and fmt.count(MARK) < MIN_MARKS:
        raise ValueError(
            f"display format: {fmt!r} has {fmt.count(MARK)} {MARK} marks for the digits, "
            f"expected at least {MIN_MARKS}"
        )
    return fmt


def display(digits: str, fmt: str) -> str:
    """The number as the campaign shows it: the format's ``X`` marks take the number's last
    digits in order, every other character of the format is kept.

    ``display("74951234567", "+7 (XXX) XXX-XX-XX") == "+7 (495) 123-45-67"``. A format with
    fewer marks than digits shows the last digits only (its literal prefix stands for the
    rest). A format with more marks than digits is filled from the right and its leftover
    leading marks are dropped: ``"+XX XXX XXX-XX-XX"`` shows 74951234567 as
    ``+7 495 123-45-67``. An empty format gives ``+`` and the digits.

    Raises ValueError when ``digits`` is not 1 to 15 digits or the format fails
    :func:`check_format`.
    """
    if not (0 < len(digits) <= MAX_DIGITS and set(digits) <= _DIGITS):
        raise ValueError(f"display: {digits!r} is not 1 to {MAX_DIGITS} digits")
    check_format(fmt)
    if not fmt:
        return "+" + digits
    marks = fmt.count(MARK)
    # Right-aligned: the last mark takes the last digit; marks before the first digit are
    # left empty.
    filler = iter(digits[-marks:])
    skip = max(0, marks - len(digits))
    out = []
    for char in fmt:
        if char != MARK:
            out.append(char)
        elif skip:
            skip -= 1
        else:
            out.append(next(filler))
    return "".join(out)
