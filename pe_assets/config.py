"""Environment settings, read and validated in one place.

Every setting pe_assets reads from the environment is parsed here, and only here, so that a missing
or malformed value fails when the code location loads, with a message naming the variable. Nothing
reads the environment at import time: ``pe_assets.definitions`` calls ``Settings.from_env()`` once
and hands the result to everything it builds. Secrets (the OAuth client secrets, Snowflake
credentials) are *not* read here: they reach resources only through Dagster's ``EnvVar`` so that
they never appear in the UI, logs or run config. This module only checks that they are set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

from pe_assets.client import DEFAULT_REQUESTS_PER_MINUTE, ClientConfigError
from pe_assets.client.http import check_base_url

DEFAULT_REGION = "mypurecloud.com"
DEFAULT_PARTITIONS_START = "2024-01-01"
DEFAULT_DATA_DIR = ".pe_data"
#: Base wait before Dagster retries an extraction step that failed retryably (then exponential).
DEFAULT_STEP_RETRY_DELAY_SECONDS = 30.0
WAREHOUSES = ("duckdb", "snowflake")
#: The API source a code location serves: the seed contract, or the real Genesys journey aggregates.
PREDICTIVE_ENGAGEMENT = "predictive-engagement"
JOURNEY_AGGREGATES = "journey-aggregates"
SOURCES = (PREDICTIVE_ENGAGEMENT, JOURNEY_AGGREGATES)

CLIENT_ID_VAR = "GENESYSCLOUD_OAUTHCLIENT_ID"
CLIENT_SECRET_VAR = "GENESYSCLOUD_OAUTHCLIENT_SECRET"
# Extra OAuth clients (same read scopes) for large organizations: ..._ID_2/..._SECRET_2 and so on.
MAX_OAUTH_CLIENTS = 8

# A DNS host name: labels of letters, digits and hyphens, at least one dot.
_HOSTNAME = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class OAuthClientVars:
    """Names of the environment variables that hold one OAuth client's id and secret."""

    id_var: str
    secret_var: str


@dataclass(frozen=True)
class SnowflakeSettings:
    """PE_WAREHOUSE=snowflake: plain settings, and the names of the set secret variables.

    Account, user and the one credential chosen travel as ``EnvVar`` names; database, schema,
    warehouse and role are plain values.
    """

    database: str
    schema: str
    warehouse: str | None
    role: str | None
    #: The set credential variables, by role: ``password`` or ``private_key`` or ``private_key_path``,
    #: plus ``private_key_password`` when a key is encrypted.
    secret_vars: dict[str, str]

    account_var: str = "SNOWFLAKE_ACCOUNT"
    user_var: str = "SNOWFLAKE_USER"


SNOWFLAKE_CREDENTIAL_VARS = {
    "password": "SNOWFLAKE_PASSWORD",
    "private_key": "SNOWFLAKE_PRIVATE_KEY",
    "private_key_path": "SNOWFLAKE_PRIVATE_KEY_PATH",
}
SNOWFLAKE_KEY_PASSWORD_VAR = "SNOWFLAKE_PRIVATE_KEY_PASSWORD"
DEFAULT_SNOWFLAKE_SCHEMA = "PE_ANALYTICS"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


@dataclass(frozen=True)
class Settings:
    """Validated, non-secret settings for one code location."""

    source: str
    api_url: str
    login_url: str
    requests_per_minute: int
    warehouse: str
    duckdb_path: str
    landing_url: str
    state_dir: str
    partitions_start: date
    oauth_clients: tuple[OAuthClientVars, ...]
    step_retry_delay_seconds: float = DEFAULT_STEP_RETRY_DELAY_SECONDS
    snowflake: SnowflakeSettings | None = None
    #: PE_BUDGET_URL: where the rate budget lives across hosts (``postgresql://user@host:port/db``);
    #: None: the SQLite file ``rate_budget.sqlite`` under ``state_dir`` (one host).
    budget_url: str | None = None
    #: Set when PE_BUDGET_PASSWORD is: the budget database's password travels as this EnvVar name.
    budget_password_var: str | None = None
    #: PE_BACKFILL_DAYS_PER_RUN: a partition range runs as runs of at most this many days; None: one run.
    backfill_days_per_run: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, today: date | None = None) -> Settings:
        """Read and check every setting; raise ``SettingsError`` naming the first bad one."""
        env = os.environ if environ is None else environ
        today = today or datetime.now(UTC).date()

        source = _get(env, "PE_SOURCE", PREDICTIVE_ENGAGEMENT).lower()
        if source not in SOURCES:
            raise SettingsError(f"PE_SOURCE={source!r} must be one of {', '.join(SOURCES)}")
        region = _get(env, "GENESYSCLOUD_REGION", DEFAULT_REGION).lower()
        if not _HOSTNAME.match(region):
            raise SettingsError(
                f"GENESYSCLOUD_REGION={region!r} is not a host name such as 'mypurecloud.com' or 'euw2.pure.cloud'"
            )
        api_url = _base_url(env, "GENESYSCLOUD_API_URL", f"https://api.{region}")
        login_url = _base_url(env, "GENESYSCLOUD_LOGIN_URL", f"https://login.{region}")

        requests_per_minute = int(
            _number(env, "PE_REQUESTS_PER_MINUTE", DEFAULT_REQUESTS_PER_MINUTE, int, 1, 10_000, "a whole number")
        )

        warehouse = _get(env, "PE_WAREHOUSE", "duckdb").lower()
        if warehouse not in WAREHOUSES:
            raise SettingsError(f"PE_WAREHOUSE={warehouse!r} must be one of {', '.join(WAREHOUSES)}")

        data_dir = _get(env, "PE_DATA_DIR", DEFAULT_DATA_DIR)
        duckdb_path = _get(env, "PE_DUCKDB_PATH", str(Path(data_dir) / "warehouse.duckdb"))
        landing_url = _get(env, "PE_LANDING_URL", str(Path(data_dir) / "landing"))
        state_dir = _get(env, "PE_STATE_DIR", str(Path(data_dir) / "state"))

        start_text = _get(env, "PE_PARTITIONS_START", DEFAULT_PARTITIONS_START)
        try:
            partitions_start = date.fromisoformat(start_text)
        except ValueError:
            raise SettingsError(f"PE_PARTITIONS_START={start_text!r} is not a date in YYYY-MM-DD form") from None
        if partitions_start >= today:
            raise SettingsError(
                f"PE_PARTITIONS_START={start_text} is not in the past: the first partition must be a complete UTC day"
            )

        step_retry_delay_seconds = _number(
            env, "PE_STEP_RETRY_DELAY_SECONDS", DEFAULT_STEP_RETRY_DELAY_SECONDS, float, 0, 3600, "a number of seconds"
        )

        budget_url = _budget_url(env)
        days_per_run = _get(env, "PE_BACKFILL_DAYS_PER_RUN", "")
        backfill_days_per_run = (
            int(_number(env, "PE_BACKFILL_DAYS_PER_RUN", 0, int, 1, 3660, "a whole number of days"))
            if days_per_run
            else None
        )

        return cls(
            source=source,
            api_url=api_url,
            login_url=login_url,
            requests_per_minute=requests_per_minute,
            warehouse=warehouse,
            duckdb_path=duckdb_path,
            landing_url=landing_url,
            state_dir=state_dir,
            partitions_start=partitions_start,
            oauth_clients=_oauth_clients(env),
            step_retry_delay_seconds=step_retry_delay_seconds,
            snowflake=_snowflake(env) if warehouse == "snowflake" else None,
            budget_url=budget_url,
            budget_password_var=BUDGET_PASSWORD_VAR if env.get(BUDGET_PASSWORD_VAR, "").strip() else None,
            backfill_days_per_run=backfill_days_per_run,
        )


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _number(
    env: Mapping[str, str], name: str, default: float, parse: Callable[[str], float], lo: float, hi: float, what: str
) -> float:
    """A number setting within [lo, hi]; ``parse`` is ``int`` or ``float``."""
    text = _get(env, name, str(default))
    try:
        value = parse(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not {what}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={text} must be between {lo} and {hi}")
    return value


def _base_url(env: Mapping[str, str], name: str, default: str) -> str:
    """A base URL the client will accept (the client's own rule: https, or http to loopback only)."""
    url = _get(env, name, default)
    try:
        return check_base_url(url, name)
    except ClientConfigError as exc:
        raise SettingsError(f"{name}={url!r}: {exc}") from None


def _oauth_clients(env: Mapping[str, str]) -> tuple[OAuthClientVars, ...]:
    """The OAuth clients configured: the unnumbered pair first, then _2, _3, ... without gaps."""
    clients = [OAuthClientVars(CLIENT_ID_VAR, CLIENT_SECRET_VAR)]
    for n in range(2, MAX_OAUTH_CLIENTS + 1):
        id_var, secret_var = f"{CLIENT_ID_VAR}_{n}", f"{CLIENT_SECRET_VAR}_{n}"
        if not env.get(id_var) and not env.get(secret_var):
            break
        clients.append(OAuthClientVars(id_var, secret_var))
    for client in clients:
        # Only presence is checked here; the values travel through EnvVar.
        for var in (client.id_var, client.secret_var):
            if not env.get(var, "").strip():
                raise SettingsError(f"{var} is not set: pe_assets needs an OAuth client id and secret")
    return tuple(clients)


BUDGET_PASSWORD_VAR = "PE_BUDGET_PASSWORD"
_BUDGET_URL_FORM = "postgresql://USER@HOST:PORT/DATABASE (the password goes in PE_BUDGET_PASSWORD)"


def _budget_url(env: Mapping[str, str]) -> str | None:
    """PE_BUDGET_URL: a PostgreSQL URL without a password, or unset (the SQLite file on this host)."""
    url = _get(env, "PE_BUDGET_URL", "")
    if not url:
        return None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.password is not None:
        # Never echo the value: it holds a secret.
        raise SettingsError(f"PE_BUDGET_URL carries a password: use {_BUDGET_URL_FORM}")
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or port == -1:
        raise SettingsError(f"PE_BUDGET_URL={url!r} is not {_BUDGET_URL_FORM}")
    if not parts.username or not parts.path.strip("/") or parts.query or parts.fragment:
        raise SettingsError(f"PE_BUDGET_URL={url!r} is not {_BUDGET_URL_FORM}")
    return url


def _snowflake(env: Mapping[str, str]) -> SnowflakeSettings:
    """The SNOWFLAKE_* settings; exactly one of password, private key and private key path."""

    def value(name: str) -> str | None:
        return env.get(name, "").strip() or None

    for name in ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_DATABASE"):
        if not value(name):
            raise SettingsError(f"{name} is not set: PE_WAREHOUSE=snowflake needs it")
    chosen = {role: var for role, var in SNOWFLAKE_CREDENTIAL_VARS.items() if value(var)}
    if len(chosen) != 1:
        found = ", ".join(chosen.values()) if chosen else "none of them"
        raise SettingsError(
            f"set exactly one of {', '.join(SNOWFLAKE_CREDENTIAL_VARS.values())} "
            f"for PE_WAREHOUSE=snowflake (found {found})"
        )
    if value(SNOWFLAKE_KEY_PASSWORD_VAR):
        if "password" in chosen:
            raise SettingsError(f"{SNOWFLAKE_KEY_PASSWORD_VAR} is set but no private key is: unset it or use a key")
        chosen["private_key_password"] = SNOWFLAKE_KEY_PASSWORD_VAR
    schema = value("SNOWFLAKE_SCHEMA") or DEFAULT_SNOWFLAKE_SCHEMA
    if not _IDENTIFIER.match(schema):
        raise SettingsError(f"SNOWFLAKE_SCHEMA={schema!r} is not a plain identifier such as PE_ANALYTICS")
    return SnowflakeSettings(
        database=value("SNOWFLAKE_DATABASE") or "",
        schema=schema,
        warehouse=value("SNOWFLAKE_WAREHOUSE"),
        role=value("SNOWFLAKE_ROLE"),
        secret_vars=chosen,
    )
