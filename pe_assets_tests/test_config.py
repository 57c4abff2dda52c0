"""Settings: defaults, overrides, and a clear error naming each bad variable."""

from __future__ import annotations

from datetime import date

import pytest

from pe_assets.config import Settings, SettingsError

CREDS = {"GENESYSCLOUD_OAUTHCLIENT_ID": "id", "GENESYSCLOUD_OAUTHCLIENT_SECRET": "secret"}
TODAY = date(2024, 6, 1)


def test_defaults_follow_the_region():
    settings = Settings.from_env(CREDS, today=TODAY)
    assert settings.api_url == "https://api.mypurecloud.com"
    assert settings.login_url == "https://login.mypurecloud.com"
    assert settings.requests_per_minute == 80
    assert settings.warehouse == "duckdb"
    assert settings.partitions_start == date(2024, 1, 1)
    assert settings.duckdb_path.endswith("warehouse.duckdb")


def test_region_and_explicit_urls():
    settings = Settings.from_env({**CREDS, "GENESYSCLOUD_REGION": "euw2.pure.cloud"}, today=TODAY)
    assert settings.api_url == "https://api.euw2.pure.cloud"
    settings = Settings.from_env(
        {**CREDS, "GENESYSCLOUD_API_URL": "http://127.0.0.1:8765/", "GENESYSCLOUD_LOGIN_URL": "http://127.0.0.1:8765"},
        today=TODAY,
    )
    assert settings.api_url == "http://127.0.0.1:8765"


def test_several_oauth_clients():
    env = {**CREDS, "GENESYSCLOUD_OAUTHCLIENT_ID_2": "id2", "GENESYSCLOUD_OAUTHCLIENT_SECRET_2": "s2"}
    clients = Settings.from_env(env, today=TODAY).oauth_clients
    assert [c.id_var for c in clients] == ["GENESYSCLOUD_OAUTHCLIENT_ID", "GENESYSCLOUD_OAUTHCLIENT_ID_2"]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"GENESYSCLOUD_OAUTHCLIENT_ID": ""}, "GENESYSCLOUD_OAUTHCLIENT_ID"),
        ({"GENESYSCLOUD_OAUTHCLIENT_SECRET": ""}, "GENESYSCLOUD_OAUTHCLIENT_SECRET"),
        ({"GENESYSCLOUD_OAUTHCLIENT_ID_2": "id2"}, "GENESYSCLOUD_OAUTHCLIENT_SECRET_2"),
        ({"GENESYSCLOUD_REGION": "not a host"}, "GENESYSCLOUD_REGION"),
        ({"GENESYSCLOUD_REGION": "https://api.mypurecloud.com"}, "GENESYSCLOUD_REGION"),
        ({"GENESYSCLOUD_API_URL": "ftp://x.example"}, "GENESYSCLOUD_API_URL"),
        ({"GENESYSCLOUD_LOGIN_URL": "login.mypurecloud.com"}, "GENESYSCLOUD_LOGIN_URL"),
        ({"PE_REQUESTS_PER_MINUTE": "0"}, "PE_REQUESTS_PER_MINUTE"),
        ({"PE_REQUESTS_PER_MINUTE": "-5"}, "PE_REQUESTS_PER_MINUTE"),
        ({"PE_REQUESTS_PER_MINUTE": "eighty"}, "PE_REQUESTS_PER_MINUTE"),
        ({"PE_WAREHOUSE": "bigquery"}, "PE_WAREHOUSE"),
        ({"PE_PARTITIONS_START": "2024-13-01"}, "PE_PARTITIONS_START"),
        ({"PE_PARTITIONS_START": "2030-01-01"}, "PE_PARTITIONS_START"),
    ],
)
def test_bad_settings_name_the_variable(override, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env({**CREDS, **override}, today=TODAY)


def test_secret_values_never_in_errors():
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({**CREDS, "GENESYSCLOUD_OAUTHCLIENT_SECRET": "hunter2-very-secret", "PE_WAREHOUSE": "x"})
    assert "hunter2" not in str(excinfo.value)
