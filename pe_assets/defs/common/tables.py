"""What every source's assets share: the partitions, table asset specs, validate-then-write, API step policy.

Each table's Pandera model (``pe_assets.schemas``) runs inside the asset that writes it, *before*
the write: a failing frame is reported as a failed, blocking ``schema`` check and never written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TypeVar

import dagster as dg
import pandas as pd

from pe_assets.client import ClientStats, PredictiveEngagementError
from pe_assets.client.base import ApiClientBase
from pe_assets.config import Settings
from pe_assets.defs.common.checks import markdown
from pe_assets.landing import LandingZone
from pe_assets.progress import Progress
from pe_assets.rules import PartitionWindow, as_date
from pe_assets.schemas import TABLES, TableSpec, ValidationReport, validate
from pe_assets.warehouse import WarehouseResource

OWNERS = ["team:data-engineering"]
SCHEMA_CHECK = "schema"
#: Extraction steps of every run draw on one API budget: at most the pool's limit run at once.
API_POOL = "pe_api"
SOURCE_TAG = "pe_assets/source"
T = TypeVar("T")


@dataclass(frozen=True)
class GraphParts:
    """The settings-dependent pieces every asset factory needs, built once per code location load."""

    settings: Settings
    partitions: dg.DailyPartitionsDefinition
    #: Tables show where they live (duckdb or snowflake) in the UI's kind tags.
    table_kinds: frozenset[str]
    #: Transient API trouble that outlived the client's own retries (or a Retry-After above the cap)
    #: gets whole-step retries from Dagster, spaced out with backoff and jitter.
    api_retry_policy: dg.RetryPolicy
    #: Unpartitioned assets (dims, views) and a partition range in one run.
    single_run: dg.BackfillPolicy
    #: Partitioned assets: one run per range, or runs of PE_BACKFILL_DAYS_PER_RUN days (several at once).
    backfill_policy: dg.BackfillPolicy
    #: Every asset says which API source it serves (PE_SOURCE): the UI shows and filters by it.
    source_tags: dict[str, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> GraphParts:
        return cls(
            settings=settings,
            partitions=dg.DailyPartitionsDefinition(
                start_date=settings.partitions_start.isoformat(),
                timezone="UTC",
                # Only complete days: today's partition appears after midnight UTC, when its data is final.
                end_offset=0,
            ),
            table_kinds=frozenset({"pandas", settings.warehouse}),
            api_retry_policy=dg.RetryPolicy(
                max_retries=3,
                delay=settings.step_retry_delay_seconds,
                backoff=dg.Backoff.EXPONENTIAL,
                jitter=dg.Jitter.PLUS_MINUS,
            ),
            single_run=dg.BackfillPolicy.single_run(),
            backfill_policy=(
                dg.BackfillPolicy.multi_run(max_partitions_per_run=settings.backfill_days_per_run)
                if settings.backfill_days_per_run
                else dg.BackfillPolicy.single_run()
            ),
            source_tags={SOURCE_TAG: settings.source},
        )

    @property
    def first_day(self) -> date:
        """The first daily partition (PE_PARTITIONS_START)."""
        return self.settings.partitions_start


def schema_check(table: str) -> dg.AssetCheckSpec:
    """The blocking check that reports a table's Pandera validation (run before every write)."""
    return dg.AssetCheckSpec(
        SCHEMA_CHECK,
        asset=table,
        blocking=True,
        description=f"Every row of {table} satisfies its Pandera model (types, nulls, ranges, uniqueness).",
    )


def table_asset_spec(
    parts: GraphParts, table: str, upstream: dg.AssetsDefinition | str, description: str
) -> dg.AssetSpec:
    return dg.AssetSpec(
        table,
        deps=[upstream],
        description=description,
        kinds=set(parts.table_kinds),
        owners=OWNERS,
        tags=parts.source_tags,
        metadata=table_definition_metadata(table),
    )


def table_definition_metadata(table: str) -> dict[str, Any]:
    """A table asset's definition metadata: its columns and types (from its Pandera model).

    On the definition, not on each materialization: a ranged run records one materialization per
    day, and a column schema in each cost ~0.5 ms of event storage per asset and day.
    """
    return {"dagster/column_schema": _column_schema(TABLES[table])}


def client_metadata(stats: ClientStats) -> dict[str, Any]:
    """An extraction step's API figures, as materialization metadata."""
    return {
        "api_requests": stats.requests,
        "api_pages": stats.pages,
        "api_429s": stats.rate_limited_429s,
        "api_retries": stats.retries,
    }


def extraction_progress(context: dg.AssetExecutionContext, client: ApiClientBase, total: int, what: str) -> Progress:
    """A step's progress, logged at least every 30 s: units done, requests, 429s, ETA from the budget."""
    oauth_clients = max(1, len(client.stats.requests_by_client))
    budget_per_second = client.requests_per_minute * oauth_clients / client.rate_window_seconds

    def requests() -> tuple[int, int]:
        stats = client.stats
        return stats.requests, stats.rate_limited_429s

    return Progress(total, what, context.log.info, requests, budget_per_second)


@contextmanager
def permanent_api_errors_fail_fast() -> Iterator[None]:
    """Let Dagster retry only what can succeed later (5xx, timeouts, a long Retry-After).

    A wrong secret, a refused scope or permission, a bad URL, a bad payload or a pagination loop
    fails the step for good, instead of being retried for minutes by the assets' RetryPolicy.
    """
    try:
        yield
    except PredictiveEngagementError as exc:
        if exc.retryable:
            raise
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def landed_by_run(
    context: dg.AssetExecutionContext, zone: LandingZone, dataset: str, days: Iterable[date]
) -> set[tuple[str, date]]:
    """(source, day) pairs an earlier attempt of this step already landed: a step retry skips them,
    so a retried run adds no second snapshot and spends no request twice. A first attempt has none
    and reads nothing (a year's backfill would otherwise parse every file it is about to add to)."""
    if context.retry_number == 0:
        return set()
    return {(landed.source_id, day) for day in days for landed in zone.landed_by_run(dataset, day, context.run_id)}


def _column_schema(spec: TableSpec) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, sql_type) for name, sql_type in spec.columns])


#: A ranged run rebuilds its tables a chunk of days at a time, and each chunk's days are replaced in
#: one transaction (every day is old or new, never partial). A chunk is at most CHUNK_DAYS days and
#: at most CHUNK_SOURCE_DAYS source-days (campaign-days, scorecard-days), but never less than a day:
#: memory is bounded by a chunk, not by the range (a year at 400 campaigns is ~1.7M step rows), and
#: more campaigns make the chunks shorter instead of bigger (400 campaigns: 31 days; 4,000: 3 days).
CHUNK_DAYS = 31
CHUNK_SOURCE_DAYS = 400 * 31


@dataclass(frozen=True)
class WarehouseRows:
    """A table's rows as a query of the warehouse's own tables: they are checked and written there
    (``WarehouseResource.replace_partition_with_query``) and never come to Python."""

    select_sql: str
    params: list[object]


#: One chunk of one or more tables: table -> (frame or warehouse rows, days it replaces; None: the
#: whole table). A chunk with ``WarehouseRows`` holds that table only (it is checked as it is written).
TableChunk = Mapping[str, tuple[pd.DataFrame | WarehouseRows, PartitionWindow | None]]


def window_chunks(window: PartitionWindow, days: int = CHUNK_DAYS) -> list[PartitionWindow]:
    """``window`` cut into consecutive windows of at most ``days`` days."""
    starts = window.days[::days]
    return [PartitionWindow(start, min(start + timedelta(days=days), window.end)) for start in starts]


def sized_chunks(window: PartitionWindow, sources_of_day: Callable[[date], int]) -> Iterator[PartitionWindow]:
    """``window`` cut into consecutive windows of whole days, each within CHUNK_DAYS days and
    CHUNK_SOURCE_DAYS source-days (a day with more sources than that is a chunk alone).

    Lazy, a day ahead at most: ``sources_of_day`` may list the day, and the caller keeps what it
    listed for that day until the day's chunk comes (see ``landed_chunks``).
    """
    start: date | None = None
    sources = 0
    for day in window.days:
        day_sources = sources_of_day(day)
        if start is not None and ((day - start).days >= CHUNK_DAYS or sources + day_sources > CHUNK_SOURCE_DAYS):
            yield PartitionWindow(start, day)
            start = None
        if start is None:
            start, sources = day, 0
        sources += day_sources
    if start is not None:
        yield PartitionWindow(start, window.end)


def landed_chunks(
    zone: LandingZone,
    dataset: str,
    window: PartitionWindow,
    *,
    latest: bool,
    read: Callable[[list[str]], T],
) -> Iterator[tuple[PartitionWindow, T]]:
    """``sized_chunks`` of the days' landed files (each source's newest only, with ``latest``), each
    with its days' files as ``read`` gives them (raw texts, parsed files).

    Every day is listed once. The next chunk is listed and read in a worker thread while the caller
    works on this one (``built_ahead``): at most two chunks' files are held.
    """
    listed: dict[date, list[str]] = {}

    def sources_of_day(day: date) -> int:
        listed[day] = zone.day_paths(dataset, day, latest=latest)
        return len(listed[day])

    def chunk_paths() -> Iterator[tuple[PartitionWindow, list[str]]]:
        for chunk in sized_chunks(window, sources_of_day):
            yield chunk, [path for day in chunk.days for path in listed.pop(day)]

    return built_ahead((chunk, read(paths)) for chunk, paths in chunk_paths())


def table_chunks(
    warehouse: WarehouseResource, table: str, source_column: str, window: PartitionWindow
) -> list[PartitionWindow]:
    """``sized_chunks`` of a table's rows in ``window``: sources are distinct ``source_column`` values
    per day, counted by one query (none yet: chunks of CHUNK_DAYS days)."""
    spec = TABLES[table]
    sources_by_day: dict[date, int] = {}
    if warehouse.has_tables(table):
        counts = warehouse.query(
            f"SELECT {spec.partition_column} AS day, count(DISTINCT {source_column}) AS sources FROM {table} "
            f"WHERE {window.sql_condition(spec.partition_column)} GROUP BY 1",
            window.sql_params,
        )
        sources_by_day = {as_date(day): int(n) for day, n in zip(counts["day"], counts["sources"], strict=True)}
    return list(sized_chunks(window, lambda day: sources_by_day.get(day, 0)))


_NO_MORE = object()


def built_ahead(chunks: Iterable[T]) -> Iterator[T]:
    """``chunks``, the next one built in a worker thread while the caller works on this one.

    Building (reading landed files, DuckDB's flattening, a warehouse query) mostly runs outside the
    GIL, so the two overlap on a second core; at most two chunks are in memory at once.
    """
    iterator = iter(chunks)
    with ThreadPoolExecutor(1, thread_name_prefix="pe-chunk") as builder:
        pending = builder.submit(next, iterator, _NO_MORE)
        while (chunk := pending.result()) is not _NO_MORE:
            pending = builder.submit(next, iterator, _NO_MORE)
            yield chunk  # type: ignore[misc]


def write_tables(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    chunks: Iterable[TableChunk],
    extra_metadata: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """Validate each chunk's frames against their models, then write them (each atomically);
    ``WarehouseRows`` are checked against their model in the warehouse, then written there.

    A chunk whose rows fail their model is not written: its failed, blocking ``schema`` check is
    reported and the step fails (chunks before it stay written, each day whole). Otherwise one
    passed check and one materialization per table close the step. ``extra_metadata`` is read
    after the last chunk (so chunk producers can count as they go): table -> metadata.
    """
    rows: dict[str, int] = {}
    checked: dict[str, int] = {}

    def failed(report: ValidationReport) -> Iterator[dg.AssetCheckResult]:
        table = report.table
        yield dg.AssetCheckResult(
            asset_key=table,
            check_name=SCHEMA_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows_checked": checked[table],
                "failures": dg.MetadataValue.json(report.summary()),
                "failure_cases": markdown(report.failure_cases, max_rows=20),
            },
        )
        raise dg.Failure(
            description=(
                f"{table}: {len(report.failure_cases)} schema failures, "
                f"nothing written for these days: {report.summary()}"
            ),
        )

    # One connection for the whole loop where the warehouse has one (DuckDB: closed, so checkpointed, once);
    # the chunk built ahead is finished (closing) before the session ends, also when a chunk fails.
    with warehouse.session(), closing(built_ahead(chunks)) as built:
        for chunk in built:
            for table, (frame, _) in chunk.items():
                if isinstance(frame, WarehouseRows):
                    if len(chunk) > 1:
                        raise ValueError(f"{table}: warehouse rows are written alone, not in a chunk of {list(chunk)}")
                    continue
                report = validate(TABLES[table], frame)
                checked[table] = checked.get(table, 0) + report.rows
                if not report.passed:
                    yield from failed(report)
            for table, (frame, window) in chunk.items():
                spec = TABLES[table]
                if isinstance(frame, WarehouseRows):
                    if window is None:
                        raise ValueError(f"{table}: warehouse rows replace a window of days, not the whole table")
                    report, written = warehouse.replace_partition_with_query(
                        spec, frame.select_sql, frame.params, window
                    )
                    checked[table] = checked.get(table, 0) + report.rows
                    if not report.passed:
                        yield from failed(report)
                elif window:
                    written = warehouse.replace_partition(spec, frame, window)
                else:
                    written = warehouse.replace_table(spec, frame)
                rows[table] = rows.get(table, 0) + written
    extras = extra_metadata() if extra_metadata else {}
    for table, count in rows.items():
        context.log.info(f"{table}: wrote {count} rows")
        yield dg.AssetCheckResult(
            asset_key=table,
            check_name=SCHEMA_CHECK,
            passed=True,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows_checked": checked[table], "failures": dg.MetadataValue.json({})},
        )
        yield dg.MaterializeResult(
            asset_key=table,
            metadata={
                "dagster/row_count": count,
                **extras.get(table, {}),
            },
        )


def write_partition(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    table: str,
    frame: pd.DataFrame,
    window: PartitionWindow | None,
    extra_metadata: dict[str, Any] | None = None,
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """One frame (``window`` None: the whole table): validate, then write atomically (``write_tables``)."""
    yield from write_tables(context, warehouse, [{table: (frame, window)}], lambda: {table: extra_metadata or {}})
