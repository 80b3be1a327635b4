"""The v3 surface: formats, versions, entities and their methods. Written once; the parser
validates against it and the error envelope advertises it."""

from __future__ import annotations

from typing import Final, Literal

Method = Literal["get", "getByRole", "getWithRole", "put", "delete"]
READ_METHODS: Final[tuple[Method, ...]] = ("get", "getByRole", "getWithRole")
WRITE_METHODS: Final[tuple[Method, ...]] = ("put", "delete")

ENTITY_METHODS: Final[dict[str, tuple[Method, ...]]] = {
    "call": (*READ_METHODS, *WRITE_METHODS),
    "callrole": ("get",),
    "phone": ("get",),
    "user": ("get", "getWithRole"),
    "campaign": ("get",),
    "tag": ("get",),
}
FORMATS: Final = ("json", "plain", "csv", "xml")
VERSIONS: Final = ("v3",)
