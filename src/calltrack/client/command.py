"""``calltrack export``: pull every call of a window from a v3 server into a file.

A thin command over ``calltrack.client.export.export_calls``: options in, a progress bar on a
terminal, a one-line summary out, and errors as ``error: ...`` with exit code 1 (130 when
interrupted).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from tqdm import tqdm

from calltrack.client._client import (
    DEFAULT_TIMEZONE,
    METHODS,
    Client,
    Method,
    api_endpoint,
    check_key,
    check_window,
    checked_segment,
    is_permanent,
)
from calltrack.client._errors import (
    ApiError,
    ClientError,
    ConnectionFailed,
    EntityDoesNotExist,
    MethodDoesNotExist,
    ServerError,
    TypeNotAvailable,
    UserNotRecognized,
    WrongApiVersion,
    WrongEndDate,
    WrongStartDate,
)
from calltrack.client.export import ExportResult, Progress, export_calls
from calltrack.client.writers import FORMATS
from calltrack.words import plural

# What a documented answer means for the person running the export.
_MEANINGS: dict[type[ApiError], str] = {
    UserNotRecognized: "the server does not know this API key (mistyped, revoked, or another "
    "server's)",
    WrongStartDate: "the server refused the --from date",
    WrongEndDate: "the server refused the --to date",
    **dict.fromkeys(
        (TypeNotAvailable, WrongApiVersion, EntityDoesNotExist, MethodDoesNotExist),
        "the server does not answer v3 calls as asked (is --url a v3 server?)",
    ),
}


def _check_zone(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        raise click.BadParameter(f"unknown time zone {value!r}") from None
    return value


@click.command("export")
@click.option("--url", required=True, envvar="CALLTRACK_URL", help="The server, e.g. https://host")
@click.option(
    "--key",
    required=True,
    envvar="CALLTRACK_API_KEY",
    help="API key (or $CALLTRACK_API_KEY, which keeps it out of the process list).",
)
@click.option(
    "--from",
    "start",
    metavar="DATE",
    help="Start: YYYY-MM-DD, a unix timestamp or 'YYYY-MM-DD HH:MM:SS' (service time zone). "
    "Needed unless --since-last has a state.",
)
@click.option("--to", "end", metavar="DATE", help="End (default: now).")
@click.option("--method", type=click.Choice(METHODS), default="get", show_default=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file; it appears only when the export is complete.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: from the extension.")
@click.option("--excel", is_flag=True, help="CSV for Excel: UTF-8 BOM and ';' separators.")
@click.option("--resume", is_flag=True, help="Continue an interrupted export of the same file.")
@click.option(
    "--since-last",
    metavar="STATEFILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pull only what changed since the last successful run, and remember this one: "
    "merged from the API v4 changes feed into a .jsonl or .parquet output (updates replace, "
    "deletes remove), else the calls after the last one pulled (v3).",
)
@click.option(
    "--timezone",
    envvar="CALLTRACK_TIMEZONE",
    default=DEFAULT_TIMEZONE,
    show_default=True,
    callback=_check_zone,
    help="The server's time zone (for date-times in --from/--to and --since-last).",
)
@click.option("--retries", default=5, show_default=True, type=click.IntRange(0, 100))
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)
def export(
    url: str,
    key: str,
    start: str | None,
    end: str | None,
    method: Method,
    output: Path,
    fmt: str | None,
    excel: bool,
    resume: bool,
    since_last: Path | None,
    timezone: str,
    retries: int,
    timeout: float,
    progress: bool | None,
) -> None:
    """Export every call from START to END of a v3 server into a CSV, JSONL, XLSX or
    Parquet file, page by page, resumably; with --since-last, keep a file up to date."""
    _check_before_asking(url, key, start, end, ZoneInfo(timezone))
    shown = sys.stderr.isatty() if progress is None else progress
    bars = [_bar(shown, "export")]

    def on_page(done: Progress) -> None:
        bars[0].set_postfix_str(plural(done.pages, "page"), refresh=False)
        bars[0].update(done.calls - bars[0].n)

    def on_convert(done: int, total: int) -> None:
        if len(bars) == 1:
            bars[0].close()
            bars.append(_bar(shown, f"writing {output.name}", total=total))
        bars[-1].update(done - bars[-1].n)

    part = output.with_name(output.name + ".part")
    try:
        with (
            _log_to(bars[0]),
            Client(url, key, timeout=timeout, retries=retries, timezone=timezone) as client,
        ):
            result = export_calls(
                client,
                output,
                start,
                end,
                method=method,
                fmt=fmt,
                excel=excel,
                resume=resume,
                since_last=since_last,
                on_page=on_page,
                on_convert=on_convert,
            )
    except KeyboardInterrupt:
        failure: tuple[str, int] | None = ("interrupted" + _resume_hint(part), 130)
    except (ClientError, ValueError) as exc:
        failure = (_explained(exc) + _hint(exc, part), 1)
    else:
        failure = None
    for bar in bars:
        bar.close()
    if failure is not None:
        _fail(*failure)
    click.echo(summary(result, since_last))


def _check_before_asking(
    url: str, key: str, start: str | None, end: str | None, zone: ZoneInfo
) -> None:
    """What can be known wrong before the first request fails here, with nothing written."""
    try:
        api_endpoint(url)
        check_key(key)
    except ValueError as exc:
        _fail(str(exc))
    segments: dict[str, str] = {}
    for option, value in (("--from", start), ("--to", end)):
        if value is not None:
            try:
                segments[option] = checked_segment(value, zone)
            except ValueError as exc:
                _fail(f"{option}: {exc}")
    if start is not None and end is not None:
        try:
            check_window(segments["--from"], segments["--to"], zone)
        except ValueError:
            _fail(f"--from {start} is after --to {end}: the window holds no call")


def _explained(error: Exception) -> str:
    meaning = next((text for cls, text in _MEANINGS.items() if isinstance(error, cls)), None)
    return f"{meaning}: the server said {str(error)!r}" if meaning else str(error)


def _hint(error: Exception, part: Path) -> str:
    """Advice about the unfinished file: resume only what a later run can finish."""
    if isinstance(error, ConnectionFailed | ServerError):
        return _resume_hint(part)
    if is_permanent(error) and part.exists():  # the pages of an earlier run, kept
        return (
            f"\nthe unfinished export in {part} is kept: once that is fixed, "
            "the same command with --resume continues it"
        )
    return ""


def _bar(shown: bool, desc: str, total: int | None = None) -> tqdm[NoReturn]:
    """Calls so far and calls/s; with a total (writing a file at the end), a bar."""
    if total is not None:
        return tqdm(total=total, disable=not shown, file=sys.stderr, unit=" calls", desc=desc)
    return tqdm(
        disable=not shown,
        file=sys.stderr,
        unit=" calls",
        desc=desc,
        # "calls: 1" reads right for any count, where "{n_fmt} calls" says "1 calls"
        bar_format="{desc}: calls: {n_fmt}{postfix} [{elapsed}, {rate_fmt}]",  # ", 3 pages"
        postfix="0 pages",
    )


def summary(result: ExportResult, since_last: Path | None = None) -> str:
    """The one line printed when an export is complete."""
    rate = result.run_calls / result.seconds if result.seconds > 0 else 0.0
    if result.feed:
        return (
            f"merged {plural(result.run_calls, 'change')} "
            f"({result.upserts:,} new or changed, {result.deletes:,} deleted) "
            f"into {result.output} [{result.format}]: {plural(result.calls, 'call')} "
            f"in {result.seconds:.1f} s ({rate:,.0f} changes/s); {since_last} saved "
            "(the changes feed's cursor)"
        )
    text = (
        f"exported {plural(result.calls, 'call')} "
        f"({plural(result.pages, 'page')}) to {result.output} "
        f"[{result.format}] in {result.seconds:.1f} s ({rate:,.0f} calls/s)"
    )
    if result.resumed:
        text += f", resumed: {plural(result.run_calls, 'call')} by this run"
    if result.skipped:
        text += f", {result.skipped:,} seen before and skipped"
    if since_last is not None:
        last = result.last_call_time or "none yet"
        text += f"; {since_last} saved (last call {last})"
    return text


def _resume_hint(part: Path) -> str:
    if part.exists():
        return (
            f"\nthe export is unfinished in {part}: "
            "run the same command with --resume to continue it"
        )
    return ""


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _log_to(bar: tqdm[NoReturn]) -> Iterator[None]:
    """Show the client's retry warnings without breaking the progress bar."""
    logger = logging.getLogger("calltrack.client")
    if logger.handlers or logging.getLogger().handlers:
        yield
        return
    handler = _BarHandler(bar)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class _BarHandler(logging.Handler):
    def __init__(self, bar: tqdm[NoReturn]) -> None:
        super().__init__(logging.WARNING)
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        self.bar.write(f"warning: {record.getMessage()}", file=sys.stderr)
