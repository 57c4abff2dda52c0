"""Environment settings, read and validated in one place.

Every setting pe_assets reads from the environment is parsed here, so that a missing or malformed
value fails when the code location loads, with a message naming the variable. Secrets (the OAuth
client secrets, Snowflake credentials) are *not* read here: they reach resources only through
Dagster's ``EnvVar`` so that they never appear in the UI, logs or run config. This module only
checks that they are set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_REGION = "mypurecloud.com"
DEFAULT_REQUESTS_PER_MINUTE = 80  # the domain guide's cap per OAuth client
DEFAULT_PARTITIONS_START = "2024-01-01"
DEFAULT_DATA_DIR = ".pe_data"
WAREHOUSES = ("duckdb", "snowflake")

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
class Settings:
    """Validated, non-secret settings for one code location."""

    api_url: str
    login_url: str
    requests_per_minute: int
    warehouse: str
    duckdb_path: str
    landing_url: str
    state_dir: str
    partitions_start: date
    oauth_clients: tuple[OAuthClientVars, ...]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, today: date | None = None) -> Settings:
        """Read and check every setting; raise ``SettingsError`` naming the first bad one."""
        env = os.environ if environ is None else environ
        today = today or datetime.now(UTC).date()

        region = _get(env, "GENESYSCLOUD_REGION", DEFAULT_REGION).lower()
        if not _HOSTNAME.match(region):
            raise SettingsError(
                f"GENESYSCLOUD_REGION={region!r} is not a host name such as 'mypurecloud.com' or 'euw2.pure.cloud'"
            )
        api_url = _base_url(env, "GENESYSCLOUD_API_URL", f"https://api.{region}")
        login_url = _base_url(env, "GENESYSCLOUD_LOGIN_URL", f"https://login.{region}")

        rpm_text = _get(env, "PE_REQUESTS_PER_MINUTE", str(DEFAULT_REQUESTS_PER_MINUTE))
        try:
            requests_per_minute = int(rpm_text)
        except ValueError:
            raise SettingsError(
                f"PE_REQUESTS_PER_MINUTE={rpm_text!r} is not a whole number of requests per minute"
            ) from None
        if not 1 <= requests_per_minute <= 10_000:
            raise SettingsError(f"PE_REQUESTS_PER_MINUTE={requests_per_minute} must be between 1 and 10000")

        warehouse = warehouse_from_env(env)

        data_dir = _get(env, "PE_DATA_DIR", DEFAULT_DATA_DIR)
        duckdb_path = _get(env, "PE_DUCKDB_PATH", str(Path(data_dir) / "warehouse.duckdb"))
        landing_url = _get(env, "PE_LANDING_URL", str(Path(data_dir) / "landing"))
        state_dir = _get(env, "PE_STATE_DIR", str(Path(data_dir) / "state"))

        partitions_start = partitions_start_from_env(env, today=today)

        return cls(
            api_url=api_url,
            login_url=login_url,
            requests_per_minute=requests_per_minute,
            warehouse=warehouse,
            duckdb_path=duckdb_path,
            landing_url=landing_url,
            state_dir=state_dir,
            partitions_start=partitions_start,
            oauth_clients=_oauth_clients(env),
        )


def partitions_start_from_env(environ: Mapping[str, str] | None = None, *, today: date | None = None) -> date:
    """PE_PARTITIONS_START: the first daily partition, a complete UTC day in the past."""
    env = os.environ if environ is None else environ
    today = today or datetime.now(UTC).date()
    start_text = _get(env, "PE_PARTITIONS_START", DEFAULT_PARTITIONS_START)
    try:
        start = date.fromisoformat(start_text)
    except ValueError:
        raise SettingsError(f"PE_PARTITIONS_START={start_text!r} is not a date in YYYY-MM-DD form") from None
    if start >= today:
        raise SettingsError(
            f"PE_PARTITIONS_START={start_text} is not in the past: the first partition must be a complete UTC day"
        )
    return start


def warehouse_from_env(environ: Mapping[str, str] | None = None) -> str:
    """PE_WAREHOUSE: 'duckdb' (default) or 'snowflake'."""
    env = os.environ if environ is None else environ
    warehouse = _get(env, "PE_WAREHOUSE", "duckdb").lower()
    if warehouse not in WAREHOUSES:
        raise SettingsError(f"PE_WAREHOUSE={warehouse!r} must be one of {', '.join(WAREHOUSES)}")
    return warehouse


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _base_url(env: Mapping[str, str], name: str, default: str) -> str:
    """An absolute http(s) base URL without query or fragment; trailing slash removed."""
    url = _get(env, name, default).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError(f"{name}={url!r} is not an absolute http(s) URL such as https://api.mypurecloud.com")
    return url


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
