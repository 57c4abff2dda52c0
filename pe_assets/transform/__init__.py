"""Landing envelopes -> table frames, one module per API source. Pure functions: no I/O, no Dagster,
no clock (the load time is an argument)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from pe_assets.schemas import TABLES, typed_frame


def to_utc_naive(value: str | datetime | None) -> pd.Timestamp | None:
    """An ISO-8601 instant (any offset) as a naive UTC timestamp (how the tables store time); None stays None."""
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


def frame(table: str, rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows as the table's typed frame (columns, order and dtypes of its Pandera model)."""
    return typed_frame(TABLES[table], rows)
