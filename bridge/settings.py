"""All settings in one typed object, read once from the environment and validated at start.

Every secret may also come from a file named by `<NAME>_FILE` (Kubernetes secret mounts); setting
both is an error, so nobody has to wonder which one is in force.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.durations import parse_duration
from bridge.errors import ConfigError
from bridge.zones import known_zone

DEFAULT_PACHCA_API_URL = "https://api.pachca.com/api/shared/v1"
# requests/s: Pachca's documented limit per token ("about 50")
PACHCA_LIMIT = 50.0
SECRET_NAMES = (
    "PACHCA_TOKEN",
    "PACHCA_SIGNING_SECRET",
    "BRIDGE_WEBHOOK_TOKEN",
    "BRIDGE_WEBHOOK_BASIC_AUTH",
    "ALERTMANAGER_AUTH",
    "REDIS_PASSWORD",
    "GRAFANA_WEBHOOK_SECRET",
    "GRAFANA_TOKEN",
    "BRIDGE_UI_SECRET",
    "BRIDGE_UI_BASIC_AUTH",
)


IPNetwork = IPv4Network | IPv6Network
# `90s`, `15m`, `1h30m`, `1d` or plain seconds (see durations.py)
Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_networks(text: str) -> list[IPNetwork]:
    """Comma-separated IPs or CIDRs (`37.200.70.177, 10.0.0.0/8`); raises ValueError naming
    the entry that is neither."""
    networks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"{part!r} is not an IP address or CIDR") from exc
    return networks


def _order(value: str) -> tuple[str, ...]:
    """BRIDGE_PRIORITY_ORDER's values, most urgent first."""
    return tuple(v.strip().lower() for v in value.split(",") if v.strip())


class Settings(BaseSettings):
    """Environment variables, by their exact names (see README, "Configuration")."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    PACHCA_TOKEN: SecretStr | None = None
    PACHCA_API_URL: str = DEFAULT_PACHCA_API_URL
    PACHCA_SIGNING_SECRET: SecretStr | None = None
    PACHCA_TIMEOUT: Duration = Field(default=10.0, gt=0)
    PACHCA_RATE_LIMIT: float = Field(default=40.0, gt=0)
    PACHCA_RATE_BURST: int = Field(default=5, ge=1)
    # the adaptive pace starts at PACHCA_RATE_LIMIT and never goes past this (default 1.5x, at
    # most PACHCA_LIMIT)
    PACHCA_RATE_MAX: float | None = Field(default=None, gt=0)
    BRIDGE_WEBHOOK_TOKEN: SecretStr | None = None
    BRIDGE_WEBHOOK_BASIC_AUTH: SecretStr | None = None
    BRIDGE_STORE: str = "sqlite:///./bridge-state.db"
    # `serve`'s port unless --port is given; the image's healthcheck reads it too
    BRIDGE_PORT: int = Field(default=8080, ge=1, le=65535)
    REDIS_PASSWORD: SecretStr | None = None
    BRIDGE_CLAIM_TTL: Duration = 60
    BRIDGE_MAX_BODY: int = Field(default=1024 * 1024, gt=0)
    BRIDGE_DEDUP_TTL: Duration = 6 * 3600
    BRIDGE_DEDUP_CACHE_SIZE: int = Field(default=100_000, gt=0)
    BRIDGE_RESOLVED_TTL: Duration = 3600
    # an open incident nothing has reported for this long is closed as "no longer reported"
    # (0: never); well above Alertmanager's repeat_interval (4h by default)
    BRIDGE_STALE_AFTER: Duration = Field(default=13 * 3600, ge=0)
    BRIDGE_RETENTION: Duration = 7 * 86400
    BRIDGE_TIMEZONE: str = "UTC"
    BRIDGE_LOG_FORMAT: Literal["text", "json"] = "text"
    BRIDGE_LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    BRIDGE_OUTBOX_CONCURRENCY: int = Field(default=8, ge=1, le=64)
    BRIDGE_RETRY_MAX_DELAY: Duration = 300
    BRIDGE_SHUTDOWN_GRACE: Duration = 20
    ALERTMANAGER_URL: str | None = None  # several, comma-separated: the replicas of one cluster
    ALERTMANAGER_AUTH: SecretStr | None = None  # "Bearer <token>" or "Basic <user>:<password>"
    BRIDGE_SILENCE_CHECK_INTERVAL: Duration = 60
    # an Alertmanager that started less than this ago may not yet have heard from every
    # Prometheus (they re-send every minute): an alert it lacks is not taken as resolved
    BRIDGE_ALERTMANAGER_SETTLE: Duration = Field(default=120, ge=0)
    BRIDGE_SCHEDULER_INTERVAL: Duration = 15
    BRIDGE_ACK_REACTION: str = "👀"
    GRAFANA_WEBHOOK_SECRET: SecretStr | None = None
    GRAFANA_SIGNATURE_HEADER: str | None = None
    GRAFANA_TIMESTAMP_HEADER: str | None = None
    GRAFANA_SIGNATURE_MAX_AGE: Duration = 300
    GRAFANA_URL: str | None = None
    GRAFANA_TOKEN: SecretStr | None = None
    BRIDGE_USER_CACHE_TTL: Duration = 3600
    BRIDGE_CALLBACK_MODE: Literal["webhook", "poll"] = "webhook"
    BRIDGE_CALLBACK_MAX_AGE: Duration = 60
    BRIDGE_CALLBACK_ALLOW_IPS: str = ""
    BRIDGE_TRUSTED_PROXIES: str = ""
    BRIDGE_POLL_INTERVAL: Duration = 2
    BRIDGE_PUBLIC_URL: str | None = None
    # incident pages (README "Incident pages"): link signing, how long a link lasts (0: no
    # expiry), and who may see the list: basic auth, or a trusted auth proxy's user header
    BRIDGE_UI_SECRET: SecretStr | None = None
    BRIDGE_UI_LINK_TTL: Duration = Field(default=0, ge=0)
    BRIDGE_UI_BASIC_AUTH: SecretStr | None = None
    BRIDGE_UI_USER_HEADER: str | None = None
    # which label orders new incidents in the outbox, and its values, most urgent first
    BRIDGE_PRIORITY_LABEL: str = "severity"
    BRIDGE_PRIORITY_ORDER: str = "critical,error,warning,info,none"
    BRIDGE_STALL_AFTER: Duration = Field(default=120, gt=0)
    BRIDGE_READ_TIMEOUT: Duration = Field(default=10, gt=0)
    BRIDGE_DEAD_LETTER_RETENTION: Duration = Field(default=14 * 86400, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what `from_environ` passes in: the environment is an argument, never a global.
        return (init_settings,)

    @field_validator("BRIDGE_WEBHOOK_BASIC_AUTH")
    @classmethod
    def _user_colon_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ":" not in value.get_secret_value():
            raise ValueError("must be 'user:password'")
        return value

    @field_validator("BRIDGE_TIMEZONE")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @field_validator("BRIDGE_STORE")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not (value.startswith(("sqlite:///", "redis://", "rediss://")) or value == "memory://"):
            raise ValueError(
                "use sqlite:///path/to/state.db, redis://host:6379/0 (several replicas) "
                "or memory:// (tests only)"
            )
        return value

    @field_validator("BRIDGE_CALLBACK_ALLOW_IPS", "BRIDGE_TRUSTED_PROXIES")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("PACHCA_API_URL", "BRIDGE_PUBLIC_URL", "GRAFANA_URL")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("ALERTMANAGER_URL")
    @classmethod
    def _http_urls(cls, value: str | None) -> str | None:
        if value is None:
            return None
        urls = [u.strip().rstrip("/") for u in value.split(",")]
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r}: each URL must start with http:// or https://")
        if len(set(urls)) != len(urls):
            raise ValueError("lists the same URL twice")
        return ",".join(urls)

    @property
    def alertmanager_urls(self) -> list[str]:
        """ALERTMANAGER_URL's replicas, in the order silences are tried."""
        return self.ALERTMANAGER_URL.split(",") if self.ALERTMANAGER_URL else []

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `environ` (default: os.environ) with `<NAME>_FILE` secrets resolved.
        Raises ConfigError naming every bad variable at once."""
        env = dict(os.environ if environ is None else environ)
        problems: list[str] = []
        # an empty variable means unset, as in most 12-factor tools
        values: dict[str, Any] = {k: v for k, v in env.items() if k in cls.model_fields and v}
        for name in SECRET_NAMES:
            path = env.get(f"{name}_FILE")
            if not path:
                continue
            if env.get(name):  # `NAME=` (empty) is unset, as everywhere else
                problems.append(f"{name} and {name}_FILE are both set; keep one")
                continue
            try:
                values[name] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{name}_FILE: cannot read {path}: {exc.strerror}")
        values.update(overrides)
        try:
            settings = cls(**values)
        except ValidationError as exc:
            problems += [
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ]
        if problems:
            raise ConfigError(problems)
        return settings

    @property
    def callback_allow_ips(self) -> list[IPNetwork]:
        return parse_networks(self.BRIDGE_CALLBACK_ALLOW_IPS)

    @field_validator("BRIDGE_PRIORITY_ORDER")
    @classmethod
    def _priority_order(cls, value: str) -> str:
        order = _order(value)
        if not order or len(order) > 9 or len(set(order)) != len(order):
            raise ValueError("must list 1 to 9 distinct values, most urgent first")
        return value

    @property
    def rate_max(self) -> float:
        """The fastest pace the bridge may try: PACHCA_RATE_MAX, or 1.5x the starting rate up
        to Pachca's documented limit (never below the starting rate). Probing past that limit
        only ever found it: a 429, and a second's pause for every call (a press's answer, the
        first critical's message) at the start of each storm."""
        if self.PACHCA_RATE_MAX is not None:
            return max(self.PACHCA_RATE_LIMIT, self.PACHCA_RATE_MAX)
        return max(self.PACHCA_RATE_LIMIT, min(1.5 * self.PACHCA_RATE_LIMIT, PACHCA_LIMIT))

    @property
    def priority_order(self) -> tuple[str, ...]:
        return _order(self.BRIDGE_PRIORITY_ORDER)

    @property
    def trusted_proxies(self) -> list[IPNetwork]:
        return parse_networks(self.BRIDGE_TRUSTED_PROXIES)

    @property
    def silence_sources(self) -> frozenset[str]:
        """Sources whose incidents get Silence buttons: those with an Alertmanager API."""
        sources = {"alertmanager"} if self.ALERTMANAGER_URL else set()
        return frozenset(sources | ({"grafana"} if self.grafana_alertmanager else set()))

    @property
    def grafana_alertmanager(self) -> tuple[str, str] | None:
        """(URL, auth) of Grafana's own Alertmanager API, for silences on Grafana incidents."""
        if self.GRAFANA_URL is None or self.GRAFANA_TOKEN is None:
            return None
        return (
            f"{self.GRAFANA_URL}/api/alertmanager/grafana",
            f"Bearer {self.GRAFANA_TOKEN.get_secret_value()}",
        )

    @property
    def retention(self) -> float:
        """How long resolved incidents are kept: never shorter than the re-open window."""
        return max(self.BRIDGE_RETENTION, self.BRIDGE_RESOLVED_TTL)

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.BRIDGE_TIMEZONE)

    @property
    def intake_open(self) -> bool:
        """True when no intake credentials are set: anyone who can reach the port may post."""
        return self.BRIDGE_WEBHOOK_TOKEN is None and self.BRIDGE_WEBHOOK_BASIC_AUTH is None

    def secret_values(self) -> list[str]:
        """Every configured secret, so logs can redact them wherever they appear."""
        secrets = [getattr(self, name) for name in SECRET_NAMES]
        out = [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]
        # the password half of basic auth alone must not leak either
        if self.BRIDGE_WEBHOOK_BASIC_AUTH is not None:
            out.append(self.BRIDGE_WEBHOOK_BASIC_AUTH.get_secret_value().split(":", 1)[1])
        if self.ALERTMANAGER_AUTH is not None:
            credentials = self.ALERTMANAGER_AUTH.get_secret_value().partition(" ")[2]
            out += [credentials, credentials.rpartition(":")[2]]
        # a password inside the store URL (redis://:password@host)
        userinfo = self.BRIDGE_STORE.partition("://")[2].rpartition("@")[0]
        if userinfo:
            out.append(userinfo.rpartition(":")[2])
        return [s for s in out if len(s) >= 4]
