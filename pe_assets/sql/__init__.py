"""The SQL pe_assets ships as files (views, the predictive-journey join, Snowflake DDL): readable by
analysts and DBAs as they are, and read by the code from the installed package."""

from importlib import resources


def shipped_sql(file_name: str) -> str:
    """The text of ``pe_assets/sql/{file_name}``, as installed."""
    return resources.files(__name__).joinpath(file_name).read_text(encoding="utf-8")
