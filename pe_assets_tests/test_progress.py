"""Progress of long steps: reported at least every interval, with an ETA from the budget (fake clock)."""

from pe_assets.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reports_once_per_interval_with_counts_and_eta():
    clock, lines, sent = FakeClock(), [], {"requests": 0}
    progress = Progress(
        total=100,
        what="campaign-days",
        report=lines.append,
        requests=lambda: (sent["requests"], 1),
        requests_per_second=2.0,
        interval_seconds=30,
        clock=clock,
    )
    for n in range(1, 51):
        clock.now = n  # one unit (two requests) a second
        sent["requests"] = 2 * n
        progress.advance()
    assert len(lines) == 1  # at 30 s, not before, not every unit
    assert "30/100 campaign-days" in lines[0] and "60 requests" in lines[0] and "1 x 429" in lines[0]
    # 70 units left x 2 requests each at 2 requests/s (the budget, equal to the observed rate): 70 s.
    assert "ETA 1m10s" in lines[0] and "30%" in lines[0]
    snapshot = progress.snapshot()
    assert (snapshot.done, snapshot.requests) == (50, 100) and snapshot.eta_seconds == 50.0
    progress.finish()
    assert len(lines) == 2 and "50/100" in lines[1]


def test_eta_takes_the_slower_of_budget_and_observed_rate_and_none_before_any_request():
    clock, lines = FakeClock(), []
    progress = Progress(10, "days", lines.append, lambda: (0, 0), requests_per_second=100.0, clock=clock)
    assert progress.snapshot().eta_seconds is None
    progress = Progress(10, "days", lines.append, lambda: (5, 0), requests_per_second=100.0, clock=clock)
    clock.now = 10.0
    progress.advance(5)  # 5 requests in 10 s observed: 0.5/s, far below the budget's 100/s
    assert progress.snapshot().eta_seconds == 10.0
    progress.advance(5)
    assert progress.snapshot().eta_seconds == 0.0
