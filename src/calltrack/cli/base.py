"""What every admin command shares: its context, its output, its errors."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
import msgspec

from calltrack.config import Settings
from calltrack.errors import CalltrackError, StoreUnavailable
from calltrack.store import Store, open_store


class Context:
    """What every command gets: the settings, the store (opened on first use), the output mode."""

    def __init__(self, database: str | None, as_json: bool) -> None:
        self.database = database
        self.as_json = as_json
        self._store: Store | None = None
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env(database_url=self.database)
        return self._settings

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def printable(text: str) -> str:
    """``text`` with each character a terminal would act on, not show (a control character
    such as the ESC of a colour or cursor sequence, a C1 control, U+2028, a bidi override),
    written as its Python escape: a stored name or site cannot rewrite what a table shows."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def printable_lines(text: str) -> str:
    """Each line of ``text`` made printable; the line breaks between them kept."""
    return "\n".join(printable(line) for line in text.split("\n"))


def emit(ctx: Context, result: dict[str, Any], text: str) -> None:
    """Print the result: one JSON object with --json, else the human sentence (printable:
    names, sites and the like are what anyone with the CLI or an import stored)."""
    if ctx.as_json:
        click.echo(msgspec.json.encode(result).decode())
    else:
        click.echo(printable_lines(text))


def fail(message: str) -> NoReturn:
    click.echo(f"error: {printable_lines(message)}", err=True)
    sys.exit(1)


class BadInput(click.UsageError):
    """A bad option or argument: click's message, with this CLI's exit code for bad input."""

    exit_code = 1


class CalltrackGroup(click.Group):
    """Turns library errors from any command into ``error: ...`` and exit code 1, and a bad
    option or argument of any command into click's message naming it, also with exit code 1
    (click's own is 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise BadInput(exc.format_message(), exc.ctx) from None
        except StoreUnavailable as exc:
            fail(f"the database is not reachable: {exc}")
        except CalltrackError as exc:
            fail(str(exc))
        finally:
            if isinstance(ctx.obj, Context):
                ctx.obj.close()


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
# Where browsers and PBXs reach this service: what printed URLs and tags start with.
server_option = click.option(
    "--server",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The address this service is reached at (by browsers, by the PBX).",
)


def command_context(click_ctx: click.Context, as_json: bool) -> Context:
    ctx: Context = click_ctx.ensure_object(Context)
    ctx.as_json = ctx.as_json or as_json
    return ctx
