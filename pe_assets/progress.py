"""How far a long extraction is: units done of the total, requests, 429s and an ETA from the budget.

A year's extraction at 400 campaigns is hours of requests per OAuth client, so a step says where it
is at least every ``interval_seconds`` (30 by default) through the callback it is given (a Dagster
step logs it; the demo and the benchmarks print it). Plain Python, thread-safe: the client's worker
threads report each finished unit. The clock is injectable, so tests never wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: A long step reports at least this often.
PROGRESS_INTERVAL_SECONDS = 30.0
BAR_WIDTH = 20


@dataclass(frozen=True)
class ProgressSnapshot:
    done: int
    total: int
    requests: int
    rate_limited_429s: int
    elapsed_seconds: float
    eta_seconds: float | None

    def line(self, what: str) -> str:
        """``[#####---------------] 25% 100/400 campaign-days, 130 requests, 0 x 429, ETA 2m05s``."""
        share = self.done / self.total if self.total else 1.0
        filled = round(share * BAR_WIDTH)
        eta = "-" if self.eta_seconds is None else _duration(self.eta_seconds)
        return (
            f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {share:4.0%} {self.done}/{self.total} {what}, "
            f"{self.requests} requests, {self.rate_limited_429s} x 429, elapsed {_duration(self.elapsed_seconds)}, "
            f"ETA {eta}"
        )


class Progress:
    """Counts finished units and reports through ``report`` when ``interval_seconds`` have passed.

    Args:
        total: units to do (campaign-days, scorecard-days, chunks).
        what: how the units are called in the report.
        report: called with one line of text.
        requests: returns (requests sent so far, 429s so far), e.g. from the client's stats.
        requests_per_second: what the budget allows (cap x OAuth clients / window); the ETA is the
            requests still to come at that rate, or at the observed rate when that is slower.
    """

    def __init__(
        self,
        total: int,
        what: str,
        report: Callable[[str], None],
        requests: Callable[[], tuple[int, int]],
        requests_per_second: float,
        *,
        interval_seconds: float = PROGRESS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.what = what
        self._report = report
        self._requests = requests
        self._requests_per_second = requests_per_second
        self._interval = interval_seconds
        self._clock = clock
        self._started = clock()
        self._last_report = self._started
        self._done = 0
        self._lock = threading.Lock()

    def advance(self, units: int = 1) -> None:
        """``units`` more are done; report if the interval has passed."""
        with self._lock:
            self._done += units
            now = self._clock()
            if now - self._last_report < self._interval:
                return
            self._last_report = now
        self._report(self.snapshot().line(self.what))

    def finish(self) -> None:
        """Report the final state once."""
        self._report(self.snapshot().line(self.what))

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            done = self._done
        requests, rate_limited = self._requests()
        elapsed = self._clock() - self._started
        return ProgressSnapshot(done, self.total, requests, rate_limited, elapsed, self._eta(done, requests, elapsed))

    def _eta(self, done: int, requests: int, elapsed: float) -> float | None:
        if done >= self.total:
            return 0.0
        if done == 0 or requests == 0:
            return None
        remaining_requests = (self.total - done) * requests / done
        budget_rate = self._requests_per_second
        observed_rate = requests / elapsed if elapsed > 0 else budget_rate
        rate = min(budget_rate, observed_rate) if budget_rate > 0 else observed_rate
        return remaining_requests / rate if rate > 0 else None


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
