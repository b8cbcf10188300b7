"""Configuration from environment variables, one settings object per service.

Every variable is prefixed ``CAREPATH_``; a service's own ones add its name
(``CAREPATH_REFERRALS_DATABASE_URL``). The defaults run the embedded mode on one machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.names import SERVICES as SERVICES  # re-exported: settings name the services
from shared.names import Role, peer_urls, service_env
from shared.tokens import DEFAULT_JWT_SECRET, MAX_TOKEN_HOURS, TOKEN_HOURS


class RunMode(StrEnum):
    development = "development"
    production = "production"


class BrokerKind(StrEnum):
    memory = "memory"  # dramatiq StubBroker with in-process worker threads
    redis = "redis"


class InsecureConfiguration(RuntimeError):
    """Raised at start-up when production would run with a development default."""


class PlatformSettings(BaseSettings):
    """Settings every carepath process shares."""

    model_config = SettingsConfigDict(env_prefix="CAREPATH_", extra="ignore")

    env: RunMode = RunMode.development
    jwt_secret: str = DEFAULT_JWT_SECRET
    token_hours: int = Field(default=TOKEN_HOURS, ge=1, le=MAX_TOKEN_HOURS)
    data_dir: Path = Path("data")
    broker: BrokerKind = BrokerKind.memory
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = "carepath"
    # Retries with exponential backoff before a message is dead-lettered.
    max_retries: int = Field(default=5, ge=0)
    min_backoff_ms: int = Field(default=1_000, ge=1)
    max_backoff_ms: int = Field(default=300_000, ge=1)
    # A crashed worker's messages come back after this long without a heartbeat.
    heartbeat_timeout_ms: int = Field(default=60_000, ge=100)
    maintenance_chance: int = Field(default=1_000, ge=0, le=1_000_000)
    # Message bodies carry no demographics, but keep dead letters in Redis briefly;
    # the consumer's own dead_letter table is the durable record.
    dead_message_ttl_ms: int = Field(default=3 * 24 * 3600 * 1000, ge=1_000)
    worker_threads: int = Field(default=4, ge=1)
    # Most queued events a consumer that can (the coordinator) acts on in one transaction.
    # It gathers those its worker threads hold, so its worker runs as many threads
    # (benchmarks/README.md: 16 gave 0.39 of raw dramatiq, 48 gave 0.56).
    event_batch: int = Field(default=48, ge=1, le=500)
    # An idle dramatiq consumer backs off up to this long between polls; dramatiq's own
    # 1 s default adds up to a second before a quiet clinic's event is picked up.
    worker_poll_ms: int = Field(default=100, ge=10, le=5_000)
    relay_interval_s: float = Field(default=2.0, gt=0)
    # How often every consumer reads each producer feed it subscribes to for events the
    # broker never delivered (0 turns it off; it also runs at worker start).
    catchup_interval_s: float = Field(default=30.0, ge=0)
    # An event younger than this that a consumer has not consumed is left to its queue.
    catchup_grace_s: float = Field(default=10.0, ge=0)
    # /ready reports a consumer that has not read a feed to its head for this long.
    feed_lag_ready_s: float = Field(default=300.0, gt=0)
    # The relay waits at most this long between attempts while the broker is down.
    relay_max_backoff_s: float = Field(default=30.0, gt=0)
    # How often the coordinator looks for waits and infusions that have become overdue
    # (0 turns it off). Thresholds are days and weeks; a minute is prompt enough.
    clock_interval_s: float = Field(default=60.0, ge=0)
    # Origins a browser may call the API from (CORS); none by default: the pages are
    # served from the API's own origin.
    cors_origins: list[str] = Field(default_factory=list)
    # How often expired idempotency keys and their stored answers (patient data) are
    # deleted (0 turns it off; an expired key still acts as new when it is reused).
    idempotency_sweep_interval_s: float = Field(default=600.0, ge=0)
    # OpenID Connect sign-in for the pages (services/web/oidc.py): unset issuer, none.
    oidc_issuer: str | None = None
    oidc_client_id: str = "carepath"
    oidc_client_secret: str | None = None
    # The claim naming a person's carepath role (a string, or a list such as `groups`),
    # and how its values map to roles (JSON); empty: the values are the role names.
    oidc_role_claim: str = "carepath_role"
    oidc_roles: dict[str, str] = Field(default_factory=dict)
    # Requests to the sign-in pages one address may make a minute, before 429 (a clinic
    # behind one NAT address signs in through it at nine in the morning).
    sign_in_per_minute: int = Field(default=30, ge=1)
    log_level: str = "INFO"
    # JSON lines; unset, JSON in production and readable console lines in development.
    log_json: bool | None = None

    @property
    def json_logs(self) -> bool:
        return self.env is RunMode.production if self.log_json is None else self.log_json

    def check_production(self) -> None:
        if self.env is RunMode.production and self.jwt_secret == DEFAULT_JWT_SECRET:
            raise InsecureConfiguration(
                "CAREPATH_JWT_SECRET is the development default; set a real secret in production"
            )
        if self.env is RunMode.production and len(self.jwt_secret) < 32:
            raise InsecureConfiguration("CAREPATH_JWT_SECRET must be at least 32 characters")
        roles = {role.value for role in Role} - {Role.service.value}
        unknown = sorted(set(self.oidc_roles.values()) - roles)
        if unknown:
            raise InsecureConfiguration(
                f"CAREPATH_OIDC_ROLES maps to {', '.join(unknown)}, which are not carepath roles"
            )
        if self.env is RunMode.production and (self.oidc_issuer or "").startswith("http://"):
            raise InsecureConfiguration("CAREPATH_OIDC_ISSUER must be https in production")


@dataclass(frozen=True)
class ServiceSettings:
    """One service's view: the platform settings plus its own database and peers."""

    service: str
    platform: PlatformSettings
    database_url: str
    service_urls: dict[str, str]

    def url_of(self, service: str) -> str:
        return self.service_urls[service]


def load_service_settings(
    service: str,
    platform: PlatformSettings | None = None,
    environ: dict[str, str] | None = None,
    default_base_url: str = "http://127.0.0.1:8000",
) -> ServiceSettings:
    """Build a service's settings; unset URLs fall back to the embedded layout."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    env = os.environ if environ is None else environ
    platform = platform or PlatformSettings()
    default_db = f"sqlite:///{platform.data_dir / service}.sqlite3"
    return ServiceSettings(
        service=service,
        platform=platform,
        database_url=env.get(service_env(service, "DATABASE_URL"), default_db),
        service_urls=peer_urls(env, default_base_url),
    )
