"""A rate-limit budget shared by every thread, process and host that uses the same OAuth client.

Genesys limits requests per OAuth client, whatever process or host sends them: a Dagster
multiprocess run (one process per step), several runs at once, several hosts share one limit. A
per-process token bucket cannot see the others, so the budget lives in a shared store:

- ``SqliteBudgetStore`` (default): a small SQLite file under PE_STATE_DIR, for the processes of
  one host. Every reservation is a write transaction opened with ``BEGIN IMMEDIATE`` (SQLite's
  database-wide write lock). Its clock is the host's (``clock``, ``time.time`` by default).
- ``PostgresBudgetStore`` (PE_BUDGET_URL=postgresql://...): one PostgreSQL database for several
  hosts. A reservation takes ``pg_advisory_xact_lock`` on each key it may use (in hash order, so
  two reservations never deadlock) and reads the *database's* ``clock_timestamp()``: hosts with
  skewed clocks still agree, because every instant in the log comes from the one database clock.

Either way, between reading the log and inserting the new entry no one else can insert for that
key, so two processes or hosts never both take the last slot. ``RateBudget`` holds the one
algorithm; a store only supplies a transaction, a clock and its SQL dialect's placeholders.

The budget is a *sliding log*: one row per request, holding the instant the request *ended*
(provisionally, while in flight, a pessimistic deadline). A new request is admitted only if fewer
than ``cap`` requests of the same key ended within the last ``window`` seconds or are still in
flight. Measuring from the end, not the start, makes the guarantee hold on the server's side: a
server receives a request after we start it and before we see the answer, so for any ``cap + 1``
requests the last one starts at least ``window`` after the first one's answer came back, hence
arrives at least ``window`` after the first one arrived. No window of ``window`` seconds, sliding
or fixed, ever holds more than ``cap`` of our requests.

Keys are hashes of the OAuth client id: the store never holds a secret nor even the plain id.
Holds (``hold``) record "do not send before" instants, from a 429's Retry-After or from rate-limit
headers saying the server's window is used up; they are shared across processes and hosts too.

The PostgreSQL store fails closed: when it cannot be reached (refused, down, restarted, wrong
password) the budget raises ``BudgetStoreError`` (retryable) naming host:port and database, never
the password, and the client sends nothing. There is no fallback to "no limit". A connection
lost while idle (a server restart) is reopened once at the next use.

Why not pyrate-limiter's ``PostgresBucket``: it stamps a request when it is *admitted*, so a
slow answer lets the next window's requests reach the server inside the same server window (the
guarantee above is lost); it has no in-flight state, no release, no shared Retry-After holds and
no choice of the OAuth client with the most budget left; it locks the whole table with NOWAIT
(contention turns into refusals and client-side sleeps, not a short wait); and it needs psycopg 3
with psycopg_pool, a second driver beside psycopg2. Matching our semantics would mean wrapping it
in most of this module anyway; ~60 lines of SQL behind the existing algorithm keep one behaviour
for both stores and are tested against a real server.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg2

from .errors import BudgetStoreError

T = TypeVar("T")

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL NOT NULL,      -- when the answer came back; a pessimistic deadline while in flight
    inflight INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS slots_key_ended ON slots (key, ended);
CREATE INDEX IF NOT EXISTS slots_ended ON slots (ended);
CREATE TABLE IF NOT EXISTS holds (
    key TEXT PRIMARY KEY,
    until REAL NOT NULL
);
"""

# double precision, not real: real is 4 bytes in PostgreSQL, far too coarse for epoch seconds.
_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text NOT NULL,
    started double precision NOT NULL,
    ended double precision NOT NULL,
    inflight integer NOT NULL
);
CREATE INDEX IF NOT EXISTS slots_key_ended ON slots (key, ended);
CREATE TABLE IF NOT EXISTS holds (
    key text PRIMARY KEY,
    until double precision NOT NULL
);
"""

# The algorithm's statements, in a dialect both stores speak (``?`` placeholders; the PostgreSQL
# store turns them into ``%s``). None contains a literal ``?`` or ``%``.
_DELETE_OLD = "DELETE FROM slots WHERE key = ? AND ended <= ?"
_HOLD_UNTIL = "SELECT until FROM holds WHERE key = ?"
_USED = "SELECT COUNT(*) FROM slots WHERE key = ? AND ended > ?"
_NTH_END = "SELECT ended, inflight FROM slots WHERE key = ? AND ended > ? ORDER BY ended LIMIT 1 OFFSET ?"
_INSERT = "INSERT INTO slots (key, started, ended, inflight) VALUES (?, ?, ?, 1) RETURNING id"
_RELEASE = "UPDATE slots SET ended = ?, inflight = 0 WHERE id = ?"
_HOLD = (
    "INSERT INTO holds (key, until) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
    "SET until = CASE WHEN excluded.until > holds.until THEN excluded.until ELSE holds.until END"
)


def budget_key(client_id: str) -> str:
    """The budget key of an OAuth client: a hash, so the store holds no identifier in clear."""
    return hashlib.sha256(f"pe-assets-budget:{client_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Grant:
    """A reserved request slot: send the request, then ``RateBudget.release`` it."""

    key: str
    slot_id: int


@dataclass(frozen=True)
class Wait:
    """No slot now. ``seconds``: earliest useful re-try; ``hold_seconds``: the shortest hold among
    the keys (0 when some key is only full, not held), used to fail fast on hours-long holds."""

    seconds: float
    hold_seconds: float


class BudgetTransaction(Protocol):
    """What the algorithm sees of one store transaction."""

    #: The store's clock at the start of the transaction (after its locks were taken).
    now: float

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one of the algorithm's statements; its rows (none for writes)."""
        ...


class BudgetStore(ABC):
    """Where the sliding log lives: a connection, a clock, and a way to make a reservation exclusive."""

    @abstractmethod
    def run(self, keys: Sequence[str], work: Callable[[BudgetTransaction], T]) -> T:
        """Run ``work`` in one transaction during which no one else reserves for ``keys`` (none: a
        plain write). ``work`` may be run a second time after a lost connection, so it must only
        touch the store."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for reprs and errors (never a secret)."""


# -- SQLite: one host ----------------------------------------------------------------------------
class _SqliteTransaction:
    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self._conn = conn
        self.now = now

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()


def _switch_to_wal(conn: sqlite3.Connection, deadline_seconds: float = 30.0) -> None:
    """Put a (possibly new) file in WAL mode. Changing the journal mode needs a moment alone with
    the file and SQLite answers "database is locked" at once, without its busy handler, when another
    process is opening the same new file: try again for a while. The mode is stored in the file,
    so once set every later connection finds it already in place."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteBudgetStore(BudgetStore):
    """The log in a SQLite file shared by the processes of one host (``BEGIN IMMEDIATE``).

    Args:
        path: the file. None: a private temporary file (one client alone; still correct across
            its threads).
        clock: seconds since the epoch; every process sharing the file must use the same clock
            (``time.time`` is system-wide).
    """

    def __init__(self, path: Path | str | None, clock: Callable[[], float]) -> None:
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="pe-budget-")
            path = Path(self._tmpdir.name) / "rate_budget.sqlite"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def __repr__(self) -> str:
        return f"SqliteBudgetStore(path={str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork: reopen in a child process.
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            _switch_to_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SQLITE_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def run(self, keys: Sequence[str], work: Callable[[BudgetTransaction], T]) -> T:
        with self._lock:
            conn = self._connection()
            # BEGIN IMMEDIATE takes the database-wide write lock: it serializes every key at once.
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(_SqliteTransaction(conn, self._clock()))
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
                self._tmpdir = None


# -- PostgreSQL: several hosts -------------------------------------------------------------------
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# One advisory lock per key, taken in hash order so two multi-key reservations cannot deadlock.
# The first lock argument scopes the locks to this schema (and away from other applications).
_LOCK_KEYS = (
    "SELECT pg_advisory_xact_lock(hashtext(%s), h) "
    "FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(%s::text[]) AS k ORDER BY 1) AS wanted"
)
_DATABASE_NOW = "SELECT extract(epoch FROM clock_timestamp())::double precision"


class _PostgresTransaction:
    def __init__(self, cursor: Any, now: float) -> None:
        self._cursor = cursor
        self.now = now

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql.replace("?", "%s"), tuple(params))
        return list(self._cursor.fetchall()) if self._cursor.description is not None else []


class PostgresBudgetStore(BudgetStore):
    """The log in a PostgreSQL database shared by several hosts; its clock is the database's.

    Args:
        host, port, dbname, user: where the database is (PE_BUDGET_URL's parts).
        password: PE_BUDGET_PASSWORD's value, or None (trust, ``.pgpass``); never shown anywhere.
        schema: the schema holding the tables (created with them when missing; then the user
            needs CREATE on the database once, or an administrator creates them beforehand).
        connect_timeout: seconds to wait for a connection before failing closed.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        dbname: str,
        user: str,
        password: str | None = None,
        schema: str = "pe_rate_budget",
        connect_timeout: int = 5,
    ) -> None:
        if not _IDENTIFIER.match(schema):
            raise ValueError(f"schema must be a lower-case SQL identifier, got {schema!r}")
        self.host, self.port, self.dbname, self.user, self.schema = host, port, dbname, user, schema
        self._password = password or None
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = -1

    @classmethod
    def from_url(cls, url: str, *, password: str | None = None, schema: str = "pe_rate_budget") -> PostgresBudgetStore:
        """From PE_BUDGET_URL (``postgresql://USER@HOST:PORT/DB``); the password comes apart."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError("a budget URL must look like postgresql://USER@HOST:PORT/DATABASE")
        if parts.password is not None:
            # Never echo the URL: it holds a secret.
            raise ValueError("the budget URL must not carry a password (give it apart, from PE_BUDGET_PASSWORD)")
        dbname = unquote(parts.path.lstrip("/"))
        if not parts.username or not dbname:
            raise ValueError(
                f"the budget URL {url!r} needs a user and a database: postgresql://USER@HOST:PORT/DATABASE"
            )
        return cls(
            host=parts.hostname,
            port=parts.port or 5432,
            dbname=dbname,
            user=unquote(parts.username),
            password=password,
            schema=schema,
        )

    def describe(self) -> str:
        return f"PostgreSQL {self.host}:{self.port} database {self.dbname!r} (user {self.user!r}, schema {self.schema})"

    def __repr__(self) -> str:
        return (
            f"PostgresBudgetStore(host={self.host!r}, port={self.port}, dbname={self.dbname!r}, "
            f"user={self.user!r}, schema={self.schema!r})"
        )

    # -- connection -------------------------------------------------------------------------
    def _error(self, exc: BaseException) -> BudgetStoreError:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if self._password:
            reason = reason.replace(self._password, "***")
        return BudgetStoreError(
            f"rate budget store unreachable: {self.describe()}: {reason}. "
            "The client sends no request without it; retry the extraction once the database answers."
        )

    def _connect(self) -> Any:
        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=self.user,
            password=self._password,
            connect_timeout=self._connect_timeout,
            application_name="pe_assets rate budget",
            # Bounded waits: a stuck peer or a lost host must turn into an error, not a hang; a
            # session that dies inside a transaction frees its advisory locks when it is dropped.
            options=(
                f"-c search_path={self.schema} -c lock_timeout=15s -c statement_timeout=15s "
                "-c idle_in_transaction_session_timeout=30s"
            ),
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('slots') IS NOT NULL AND to_regclass('holds') IS NOT NULL")
                if not cur.fetchone()[0]:
                    # Hosts starting together would race on CREATE ... IF NOT EXISTS (a duplicate
                    # key in the catalog): one creates, the others wait on this lock.
                    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s), 0)", (self.schema,))
                    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
                    cur.execute(_POSTGRES_SCHEMA)
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
        self._conn = None

    def _rollback_quietly(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rollback()
        except psycopg2.Error:
            self._drop_connection()

    def _database_now(self, cursor: Any) -> float:
        """The database's clock: the one clock every host agrees on."""
        cursor.execute(_DATABASE_NOW)
        return float(cursor.fetchone()[0])

    def run(self, keys: Sequence[str], work: Callable[[BudgetTransaction], T]) -> T:
        with self._lock:
            if self._pid != os.getpid():
                # A connection must not cross a fork: the child opens its own.
                self._conn, self._pid = None, os.getpid()
            reused = self._conn is not None
            while True:
                try:
                    if self._conn is None:
                        self._conn = self._connect()
                    with self._conn.cursor() as cursor:
                        if keys:
                            cursor.execute(_LOCK_KEYS, (self.schema, sorted(set(keys))))
                        result = work(_PostgresTransaction(cursor, self._database_now(cursor)))
                    self._conn.commit()
                    return result
                except psycopg2.Error as exc:
                    self._drop_connection()
                    if reused:
                        # The connection may have died while idle (a server restart): one more
                        # try on a fresh one. A retried reservation whose commit had in fact
                        # landed leaves one extra in-flight row: it costs budget, never breaks
                        # the cap.
                        reused = False
                        continue
                    raise self._error(exc) from None
                except BaseException:
                    # Not the store's fault (a bug, an interrupt): end the transaction, keep the connection.
                    self._rollback_quietly()
                    raise

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._drop_connection()
            self._conn = None


# -- the algorithm -------------------------------------------------------------------------------
class RateBudget:
    """Sliding-log rate budget over a ``BudgetStore``, safe across threads, processes and (with
    PostgreSQL) hosts.

    Args:
        store: a ``BudgetStore``; or a SQLite file path shared by every process of the host; or
            None: a private temporary SQLite file (this client alone; still correct across its
            threads).
        cap: requests allowed per key in any window.
        window: window length in seconds.
        clock: seconds since the epoch, for a SQLite store built here (every process sharing the
            file must use the same clock; ``time.time`` is system-wide). A PostgreSQL store uses
            the database's clock instead.
        inflight_deadline: how long an unfinished request is presumed in flight (a crashed process
            never releases its slot; the slot then frees ``inflight_deadline + window`` after start).
    """

    def __init__(
        self,
        store: BudgetStore | Path | str | None,
        *,
        cap: int,
        window: float,
        clock: Callable[[], float],
        inflight_deadline: float,
    ) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        self.store = store if isinstance(store, BudgetStore) else SqliteBudgetStore(store, clock)
        self.cap = cap
        self.window = window
        self._inflight_deadline = inflight_deadline

    def __repr__(self) -> str:
        return f"RateBudget(store={self.store.describe()!r}, cap={self.cap}, window={self.window})"

    def close(self) -> None:
        """Close the store's connection (and drop a private SQLite file, if any)."""
        self.store.close()

    # -- operations -------------------------------------------------------------------------
    def try_acquire(self, keys: Sequence[str]) -> Grant | Wait:
        """Reserve one slot for the key with the most budget left, or say how long to wait."""

        def reserve(tx: BudgetTransaction) -> Grant | Wait:
            now = tx.now
            horizon = now - self.window
            best: tuple[int, int, str] | None = None  # (used, position, key)
            waits: list[float] = []
            holds: list[float] = []
            for position, key in enumerate(keys):
                # Rows older than two windows can never matter again (even for a process that
                # was configured with a slightly longer window).
                tx.rows(_DELETE_OLD, (key, now - 2 * self.window))
                hold_rows = tx.rows(_HOLD_UNTIL, (key,))
                hold = max(0.0, hold_rows[0][0] - now) if hold_rows else 0.0
                holds.append(hold)
                used = int(tx.rows(_USED, (key, horizon))[0][0])
                if hold <= 0 and used < self.cap:
                    if best is None or (used, position) < best[:2]:
                        best = (used, position, key)
                    continue
                wait = hold
                if used >= self.cap:
                    # The slot that frees first: the (used - cap + 1)-th oldest end.
                    ended, inflight = tx.rows(_NTH_END, (key, horizon, used - self.cap))[0]
                    # In flight: it cannot free before now + window; look again then.
                    wait = max(wait, self.window if inflight else ended + self.window - now)
                waits.append(wait)
            if best is not None:
                slot_id = tx.rows(_INSERT, (best[2], now, now + self._inflight_deadline))[0][0]
                return Grant(key=best[2], slot_id=int(slot_id))
            return Wait(seconds=max(0.001, min(waits)), hold_seconds=min(holds))

        return self.store.run(keys, reserve)

    def release(self, grant: Grant) -> None:
        """Record that the request of ``grant`` got its answer (or failed) now."""
        self.store.run((), lambda tx: tx.rows(_RELEASE, (tx.now, grant.slot_id)))

    def hold(self, key: str, seconds: float) -> None:
        """Let no one send for ``key`` during the next ``seconds`` (a hold only ever grows)."""
        if seconds <= 0:
            return
        self.store.run((), lambda tx: tx.rows(_HOLD, (key, tx.now + seconds)))

    def used(self, key: str) -> int:
        """Requests of ``key`` that ended within the window or are in flight (for stats and tests)."""
        return int(self.store.run((), lambda tx: tx.rows(_USED, (key, tx.now - self.window)))[0][0])
