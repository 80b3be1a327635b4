"""XML answers: one well-formed UTF-8 document per page or entity list.

Calls are ``<calls><call page="N"><universalId>…</universalId>…</call>…</calls>``, an element
per field in the contract order; entity rows are ``<{entity}s><{entity}><{field}>…`` likewise.
Booleans are ``true``/``false``; an array is an element holding one child per item, named by
``ITEM_NAMES`` (``item`` for arrays not listed); an object item (a hook) holds an element per
key. In text ``&``, ``<``, ``>`` are escaped and CR is ``&#13;`` (a parser would turn a raw CR
into LF); characters XML 1.0 forbids even escaped (C0 controls but tab, LF, CR; U+FFFE, U+FFFF;
lone surrogates) become U+FFFD. See ``docs/formats.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from operator import itemgetter
from typing import Final

import msgspec

from calltrack.iters import batched
from calltrack.model import FIELD_NAMES
from calltrack.render.rows import (
    ARRAY_COLUMNS,
    BOOL_COLUMNS,
    CHUNK_ROWS,
    STR_COLUMNS,
    call_values,
    utf8,
)

CONTENT_TYPE: Final = "application/xml"
DECLARATION: Final = '<?xml version="1.0" encoding="UTF-8"?>\n'
# The element of one item of an array field; other arrays' items are <item>.
ITEM_NAMES: Final = {"tags": "tag", "cbAttemptsQueue": "attempt", "hooks": "hook"}

_FORBIDDEN: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPECIAL: Final = re.compile(f"[&<>\r{_FORBIDDEN.pattern[1:-1]}]")
# XML names as we use them (ASCII; a field or key that is not one is a programming error).
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

# A call is one str.format over (page, texts..., ints..., booleans..., arrays...): the columns
# grouped by kind, so that each group is taken from the decoded values in one step.
_INT_COLUMNS: Final = tuple(
    i for i in range(1, len(FIELD_NAMES)) if i not in {*STR_COLUMNS, *BOOL_COLUMNS, *ARRAY_COLUMNS}
)
_SLOTS: Final = {
    column: slot
    for slot, column in enumerate((0, *STR_COLUMNS, *_INT_COLUMNS, *BOOL_COLUMNS, *ARRAY_COLUMNS))
}
_CALL: Final = (
    '<call page="{0}">'
    + "".join(f"<{name}>{{{_SLOTS[i]}}}</{name}>" for i, name in enumerate(FIELD_NAMES) if i)
    + "</call>\n"
)
_strings = itemgetter(*STR_COLUMNS)
_ints = itemgetter(*_INT_COLUMNS)
_bools = itemgetter(*BOOL_COLUMNS)
_ARRAYS: Final = tuple((i, FIELD_NAMES[i]) for i in ARRAY_COLUMNS)
_BOOL_TEXT: Final = ("false", "true")


def text(value: str) -> str:
    """``value`` as XML character data: escaped, forbidden characters as U+FFFD."""
    if not _SPECIAL.search(value):
        return value
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _FORBIDDEN.sub("\ufffd", value.replace("\r", "&#13;"))


def render_calls(bodies: Sequence[bytes], page: int) -> Iterator[bytes]:
    """``<calls>`` with a ``<call page="{page}">`` per call, in the given order."""
    lead = DECLARATION + "<calls>\n"  # goes with the first calls, so errors come before it
    for batch in call_values(bodies, page):
        parts = [
            _CALL.format(
                page,
                *[text(value) for value in _strings(values)],
                *_ints(values),
                *[_BOOL_TEXT[flag] for flag in _bools(values)],
                *[_array(name, values[i]) for i, name in _ARRAYS],
            )
            for values in batch
        ]
        yield utf8(lead + "".join(parts))
        lead = ""
    yield utf8(lead + "</calls>\n")


def render_rows(
    entity: str, fields: Sequence[str], rows: Iterable[Mapping[str, object]]
) -> Iterator[bytes]:
    """``<{entity}s>`` with an ``<{entity}>`` per row holding an element per field, in order."""
    for name in (entity, *fields):
        _name(name)
    lead = f"{DECLARATION}<{entity}s>\n"
    for batch in batched(rows, CHUNK_ROWS):
        parts = [lead]
        for row in batch:
            parts.append(f"<{entity}>")
            parts.extend([_element(name, row[name]) for name in fields])
            parts.append(f"</{entity}>\n")
        yield utf8("".join(parts))
        lead = ""
    yield utf8(f"{lead}</{entity}s>\n")


def _element(name: str, value: object) -> str:
    return f"<{name}>{_content(name, value)}</{name}>"


def _content(name: str, value: object) -> str:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, bool):
        return _BOOL_TEXT[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return _array(name, value)
    if isinstance(value, msgspec.Struct):  # a Hook of a decoded call
        pairs = zip(value.__struct_fields__, msgspec.structs.astuple(value), strict=True)
        return "".join([_element(key, item) for key, item in pairs])
    if isinstance(value, Mapping):
        return "".join([_element(_name(key), item) for key, item in value.items()])
    raise TypeError(f"cannot render {type(value).__name__} as XML: field `{name}`")


def _array(name: str, items: object) -> str:
    if not items:
        return ""
    if not isinstance(items, list | tuple):  # the model's arrays are lists: a programming error
        raise TypeError(f"cannot render {type(items).__name__} as an XML array: field `{name}`")
    item = ITEM_NAMES.get(name, "item")
    return "".join([_element(item, value) for value in items])


@cache
def _name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"not an XML element name: {name!r}")
    return name
