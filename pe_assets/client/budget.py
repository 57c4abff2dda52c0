"""A rate-limit budget shared by every thread and process that uses the same OAuth client.

Genesys limits requests per OAuth client, whatever process sends them: a Dagster multiprocess run
(one process per step) or several runs at once share one limit. A per-process token bucket cannot
see the others, so the budget lives in a small SQLite file, and every reservation is a write
transaction opened with ``BEGIN IMMEDIATE`` (SQLite's database-wide write lock): between reading the
log and inserting the new entry no other process can insert, so two processes never both take the
last slot.

The budget is a *sliding log*: one row per request, holding the instant the request *ended*
(provisionally, while in flight, a pessimistic deadline). A new request is admitted only if fewer
than ``cap`` requests of the same key ended within the last ``window`` seconds or are still in
flight. Measuring from the end, not the start, makes the guarantee hold on the server's side: a
server receives a request after we start it and before we see the answer, so for any ``cap + 1``
requests the last one starts at least ``window`` after the first one's answer came back, hence
arrives at least ``window`` after the first one arrived. No window of ``window`` seconds, sliding
or fixed, ever holds more than ``cap`` of our requests.

Keys are hashes of the OAuth client id: the file never holds a secret nor even the plain id.
Holds (``hold``) record "do not send before" instants, from a 429's Retry-After or from rate-limit
headers saying the server's window is used up; they are shared across processes too.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
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


def budget_key(client_id: str) -> str:
    """The budget key of an OAuth client: a hash, so the file holds no identifier in clear."""
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


class RateBudget:
    """Sliding-log rate budget in SQLite, safe across threads (one lock) and processes (BEGIN IMMEDIATE).

    Args:
        path: SQLite file shared by every process using the same OAuth clients. None: a private
            temporary file (this client alone; still correct across its threads).
        cap: requests allowed per key in any window.
        window: window length in seconds.
        clock: seconds since the epoch; every process sharing the file must use the same clock
            (the default ``time.time`` is system-wide).
        inflight_deadline: how long an unfinished request is presumed in flight (a crashed process
            never releases its slot; the slot then frees ``inflight_deadline + window`` after start).
    """

    def __init__(
        self,
        path: Path | None,
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
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="pe-budget-")
            path = Path(self._tmpdir.name) / "rate_budget.sqlite"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cap = cap
        self.window = window
        self._clock = clock
        self._inflight_deadline = inflight_deadline
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def __repr__(self) -> str:
        return f"RateBudget(path={str(self.path)!r}, cap={self.cap}, window={self.window})"

    # -- connection -------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork: reopen in a child process.
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def close(self) -> None:
        """Close the connection (and drop the private file, if any)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
                self._tmpdir = None

    # -- operations -------------------------------------------------------------------------
    def try_acquire(self, keys: Sequence[str]) -> Grant | Wait:
        """Reserve one slot for the key with the most budget left, or say how long to wait."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock()
                horizon = now - self.window
                # Rows older than two windows can never matter again (even for a process that
                # was configured with a slightly longer window).
                conn.execute("DELETE FROM slots WHERE ended <= ?", (now - 2 * self.window,))
                best: tuple[int, int, str] | None = None  # (used, position, key)
                waits: list[float] = []
                holds: list[float] = []
                for position, key in enumerate(keys):
                    row = conn.execute("SELECT until FROM holds WHERE key = ?", (key,)).fetchone()
                    hold = max(0.0, row[0] - now) if row else 0.0
                    holds.append(hold)
                    used = conn.execute(
                        "SELECT COUNT(*) FROM slots WHERE key = ? AND ended > ?", (key, horizon)
                    ).fetchone()[0]
                    if hold <= 0 and used < self.cap:
                        if best is None or (used, position) < best[:2]:
                            best = (used, position, key)
                        continue
                    wait = hold
                    if used >= self.cap:
                        # The slot that frees first: the (used - cap + 1)-th oldest end.
                        ended, inflight = conn.execute(
                            "SELECT ended, inflight FROM slots WHERE key = ? AND ended > ? "
                            "ORDER BY ended LIMIT 1 OFFSET ?",
                            (key, horizon, used - self.cap),
                        ).fetchone()
                        # In flight: it cannot free before now + window; look again then.
                        wait = max(wait, self.window if inflight else ended + self.window - now)
                    waits.append(wait)
                if best is not None:
                    cursor = conn.execute(
                        "INSERT INTO slots (key, started, ended, inflight) VALUES (?, ?, ?, 1)",
                        (best[2], now, now + self._inflight_deadline),
                    )
                    conn.execute("COMMIT")
                    return Grant(key=best[2], slot_id=int(cursor.lastrowid or 0))
                conn.execute("COMMIT")
                return Wait(seconds=max(0.001, min(waits)), hold_seconds=min(holds))
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def release(self, grant: Grant) -> None:
        """Record that the request of ``grant`` got its answer (or failed) now."""
        with self._lock:
            conn = self._connection()
            conn.execute("UPDATE slots SET ended = ?, inflight = 0 WHERE id = ?", (self._clock(), grant.slot_id))

    def hold(self, key: str, seconds: float) -> None:
        """Let no process send for ``key`` during the next ``seconds`` (a hold only ever grows)."""
        if seconds <= 0:
            return
        with self._lock:
            conn = self._connection()
            until = self._clock() + seconds
            conn.execute(
                "INSERT INTO holds (key, until) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET until = MAX(until, excluded.until)",
                (key, until),
            )

    def used(self, key: str) -> int:
        """Requests of ``key`` that ended within the window or are in flight (for stats and tests)."""
        with self._lock:
            conn = self._connection()
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM slots WHERE key = ? AND ended > ?",
                    (key, self._clock() - self.window),
                ).fetchone()[0]
            )
