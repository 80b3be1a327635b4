"""Settings read from the environment (``CALLTRACK_*``), with defaults that run out of the box."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calltrack.errors import CalltrackError
from calltrack.hooks.schedule import parse_schedule

DEFAULT_DATABASE_URL = "sqlite:///calltrack.db"
HOOKS_DELIVERERS = ("workers", "process", "off")


class ConfigError(CalltrackError, ValueError):
    """A setting has a value the service cannot use; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the service; see the README's configuration table."""

    database_url: str = DEFAULT_DATABASE_URL
    timezone: str = "Europe/Moscow"
    page_size: int = 1000
    # Seconds a request waits for the database before answering 503.
    db_timeout: float = 5.0
    # Seconds a client is told to wait (Retry-After) when the store is unavailable.
    retry_after: int = 5
    db_pool_size: int = 4
    # Requests per key per rate window; 0 turns the limit off.
    rate_limit: int = 0
    rate_window: int = 60
    # Largest request body (call/put) accepted, in bytes.
    max_body_bytes: int = 10 * 1024 * 1024
    # gzip level for clients that accept it (1 fastest .. 9 smallest); 0 never compresses.
    gzip_level: int = 1
    log_level: str = "info"
    # Hits of the page snippet one client IP may post a minute (0: no limit).
    hit_limit: int = 120
    # Proxies (addresses or networks, comma-separated) whose X-Forwarded-For is believed.
    trusted_proxies: str = ""
    # A site key whose campaign the demo site (/demo/) shows; set by `calltrack demo`.
    demo_site: str = ""
    # A MaxMind City database (.mmdb): a call's city, region and country from its visit's IP.
    geoip_db: str = ""
    # Seconds at most between the telephony sweeper's turns in each worker (each wait is a
    # random half to whole of it, so workers spread out).
    sweep_seconds: float = 30.0
    # Webhooks: hosts (names, addresses, networks) deliveries may reach over http and at
    # private addresses; deliveries in flight per process; seconds an attempt may take; the
    # retry schedule in seconds ("" = the standard one, 5 s to 24 h); seconds of failures
    # after which an endpoint is disabled.
    hooks_allow_hosts: str = ""
    hooks_concurrency: int = 16
    hooks_timeout: float = 10.0
    hooks_schedule: str = ""
    hooks_disable_after: float = 3 * 86400.0
    # Where webhooks are sent from: "process" (`serve` runs one deliverer process beside its
    # workers), "workers" (a deliverer inside every worker, woken by the requests that write
    # deliveries), "off" (this server sends none: `calltrack hooks run` does, elsewhere).
    hooks_deliverer: str = "process"
    # Days the v4 changes feed keeps deletes; a cursor older than what was pruned gets 410.
    changes_days: int = 30
    # The console's session cookies: the key that signs them ("" = one kept in the database,
    # made on first use, so every worker and host shares it), and hours a sign-in lasts.
    console_secret: str = ""
    console_session_hours: float = 12.0
    # Failed console sign-ins one client IP may make in 15 minutes.
    console_sign_in_limit: int = 10

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(
            ip_network(part.strip()) for part in self.trusted_proxies.split(",") if part.strip()
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``CALLTRACK_*`` variables; explicit overrides (CLI flags) win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, kind in _FIELDS.items():
            raw = env.get("CALLTRACK_" + name.upper())
            if raw is not None and raw != "":
                values[name] = _parse(name, kind, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"CALLTRACK_TIMEZONE: unknown time zone {self.timezone!r}") from exc
        if not 1 <= self.page_size <= 100_000:
            raise ConfigError("CALLTRACK_PAGE_SIZE: must be between 1 and 100000")
        if self.db_timeout <= 0:
            raise ConfigError("CALLTRACK_DB_TIMEOUT: must be positive")
        if self.retry_after < 1:
            raise ConfigError("CALLTRACK_RETRY_AFTER: must be at least 1")
        if self.db_pool_size < 1:
            raise ConfigError("CALLTRACK_DB_POOL_SIZE: must be at least 1")
        if self.rate_limit < 0:
            raise ConfigError("CALLTRACK_RATE_LIMIT: must be 0 (off) or more")
        if self.rate_window < 1:
            raise ConfigError("CALLTRACK_RATE_WINDOW: must be at least 1 second")
        if not 0 <= self.gzip_level <= 9:
            raise ConfigError("CALLTRACK_GZIP_LEVEL: must be between 0 (off) and 9")
        if self.max_body_bytes < 1:
            raise ConfigError("CALLTRACK_MAX_BODY_BYTES: must be at least 1")
        if self.sweep_seconds <= 0:
            raise ConfigError("CALLTRACK_SWEEP_SECONDS: must be positive")
        if self.changes_days < 1:
            raise ConfigError("CALLTRACK_CHANGES_DAYS: must be at least 1")
        if self.hooks_deliverer not in HOOKS_DELIVERERS:
            raise ConfigError(
                f"CALLTRACK_HOOKS_DELIVERER: expected one of {', '.join(HOOKS_DELIVERERS)}"
            )
        if self.hooks_concurrency < 1:
            raise ConfigError("CALLTRACK_HOOKS_CONCURRENCY: must be at least 1")
        if self.hooks_timeout <= 0:
            raise ConfigError("CALLTRACK_HOOKS_TIMEOUT: must be positive")
        if self.hooks_disable_after <= 0:
            raise ConfigError("CALLTRACK_HOOKS_DISABLE_AFTER: must be positive")
        try:
            parse_schedule(self.hooks_schedule)
        except ValueError as exc:
            raise ConfigError(f"CALLTRACK_HOOKS_SCHEDULE: {exc}") from exc
        if self.console_session_hours <= 0:
            raise ConfigError("CALLTRACK_CONSOLE_SESSION_HOURS: must be positive")
        if self.console_sign_in_limit < 1:
            raise ConfigError("CALLTRACK_CONSOLE_SIGN_IN_LIMIT: must be at least 1")
        if self.hit_limit < 0:
            raise ConfigError("CALLTRACK_HIT_LIMIT: must be 0 (off) or more")
        try:
            self.proxy_networks  # noqa: B018 - parsed to be checked
        except ValueError as exc:
            raise ConfigError(f"CALLTRACK_TRUSTED_PROXIES: {exc}") from exc
        if not self.database_url.startswith(("sqlite:", "postgresql:", "postgres:")):
            raise ConfigError(
                "CALLTRACK_DATABASE_URL: expected sqlite:///PATH or postgresql://..., "
                f"got {self.database_url!r}"
            )


_FIELDS: dict[str, type] = {
    "database_url": str,
    "timezone": str,
    "page_size": int,
    "db_timeout": float,
    "retry_after": int,
    "db_pool_size": int,
    "rate_limit": int,
    "rate_window": int,
    "max_body_bytes": int,
    "gzip_level": int,
    "log_level": str,
    "hit_limit": int,
    "trusted_proxies": str,
    "demo_site": str,
    "geoip_db": str,
    "sweep_seconds": float,
    "hooks_allow_hosts": str,
    "hooks_concurrency": int,
    "hooks_timeout": float,
    "hooks_schedule": str,
    "hooks_disable_after": float,
    "hooks_deliverer": str,
    "changes_days": int,
    "console_secret": str,
    "console_session_hours": float,
    "console_sign_in_limit": int,
}


def _parse(name: str, kind: type, raw: str) -> object:
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(
            f"CALLTRACK_{name.upper()}: expected {kind.__name__}, got {raw!r}"
        ) from exc
