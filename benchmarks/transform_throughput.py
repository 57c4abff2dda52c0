"""Journey step flattening: the row-by-row Python rules vs DuckDB over the landed JSON text.

Prints figures; never a test. Run:  .venv/bin/python benchmarks/transform_throughput.py

Builds the JSON text of 400 campaigns x 100 days (one envelope each, written as the landing zone
writes it: compact ``json.dumps``), 25 steps per day over 2 pages, so 1,000,000 steps, ~0.1% of
them bad (a seeded mix of every rejection reason). Then times, on the same texts:

- ``python``: ``json.loads`` of each text + ``journey_frames_reference`` (the old path);
- ``sql``: ``journey_frames_from_json`` on the texts (the new path: text in, frames out);
- ``sql via dicts``: ``journey_frames`` on already parsed envelopes (dicts -> text -> SQL), for
  callers that hold dicts (the parsing is not timed);

and checks that they give identical frames.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from pe_assets.transform.predictive_engagement import (
    JourneyTransformResult,
    journey_frames,
    journey_frames_from_json,
    journey_frames_reference,
)

LOADED = datetime(2025, 1, 1, tzinfo=UTC)
# Bad steps, one drawn at random per bad slot: every rejection reason the rules have.
BAD_STEPS: list[Any] = [
    "not an object",
    None,
    {"stepName": "no id", "contactCount": 1, "conversionRate": 0.1},
    {"stepId": 5, "contactCount": 1, "conversionRate": 0.1},
    {"stepId": "DUPLICATE", "contactCount": 1, "conversionRate": 0.1},
    {"stepId": "SELF", "conversionRate": 0.1},
    {"stepId": "SELF", "contactCount": "7", "conversionRate": 0.1},
    {"stepId": "SELF", "contactCount": 2.5, "conversionRate": 0.1},
    {"stepId": "SELF", "contactCount": -3, "conversionRate": 0.1},
    {"stepId": "SELF", "contactCount": 1, "conversionRate": 1.5},
    {"stepId": "SELF", "contactCount": 1},
    {"stepId": "SELF", "contactCount": 1, "conversionRate": 0.1, "averageScore": True},
    {"stepId": "SELF", "contactCount": 1, "conversionRate": 0.1, "stepName": 3},
]


def envelope_texts(campaigns: int, days: int, steps: int, bad_share: float, seed: int = 7) -> list[str]:
    """One compact JSON text per campaign and day, deterministic for a seed."""
    rng = random.Random(seed)
    first_day = date(2024, 9, 1)
    texts = []
    for c in range(campaigns):
        for d in range(days):
            day = first_day + timedelta(days=d)
            body: list[Any] = []
            for s in range(steps):
                if rng.random() < bad_share:
                    bad = BAD_STEPS[rng.randrange(len(BAD_STEPS))]
                    if isinstance(bad, dict) and bad.get("stepId") == "DUPLICATE":
                        bad = {**bad, "stepId": f"step-{max(s - 1, 0)}"}  # the previous step's id
                    elif isinstance(bad, dict) and bad.get("stepId") == "SELF":
                        bad = {**bad, "stepId": f"step-{s}"}
                    body.append(bad)
                    continue
                body.append(
                    {
                        "stepId": f"step-{s}",
                        "stepName": f"Step {s} of campaign {c}",
                        "contactCount": rng.randrange(0, 100_000),
                        "conversionRate": rng.random(),
                        "averageScore": rng.random() if s % 3 else None,
                        "exitReason": rng.choice(["abandoned", "converted", "timeout", None, ""]),
                    }
                )
            half = len(body) // 2
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
            envelope = {
                "envelope_version": 1,
                "dataset": "raw_journeys",
                "day": day.isoformat(),
                "source_id": f"campaign-{c:04d}",
                "extracted_at": (midnight + timedelta(days=1, hours=3, seconds=c)).isoformat(),
                "campaign": {"id": f"campaign-{c:04d}", "status": "active", "scorecardId": f"sc-{c % 40}"},
                "pages": [{"pageNumber": 1, "steps": body[:half]}, {"pageNumber": 2, "steps": body[half:]}],
            }
            texts.append(json.dumps(envelope, ensure_ascii=False, allow_nan=False, separators=(",", ":")))
    return texts


def timed(label: str, rows: int, run: Callable[[], JourneyTransformResult]) -> JourneyTransformResult:
    """Wall time (what a run waits) and this process's CPU time, summed over DuckDB's threads: on
    a shared box the wall time swings with other load, the CPU time much less."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = run()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    load = os.getloadavg()[0]
    print(f"{label:<14} {seconds:7.2f} s wall {rows / seconds:12,.0f} steps/s  {cpu:7.2f} s CPU  (load {load:.1f})")
    return result


def assert_same(left: JourneyTransformResult, right: JourneyTransformResult) -> None:
    pd.testing.assert_frame_equal(left.steps, right.steps)
    pd.testing.assert_frame_equal(left.rejected, right.rejected)
    assert left.unknown_fields == right.unknown_fields


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=400)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--bad-share", type=float, default=0.001)
    parser.add_argument("--skip-python", action="store_true", help="skip the slow row-by-row baseline")
    args = parser.parse_args()

    texts = envelope_texts(args.campaigns, args.days, args.steps, args.bad_share)
    rows = args.campaigns * args.days * args.steps
    megabytes = sum(len(t) for t in texts) / 1e6
    print(f"{len(texts):,} envelopes, {rows:,} steps, {megabytes:,.0f} MB of JSON text")

    sql = timed("sql", rows, lambda: journey_frames_from_json(texts, LOADED))
    sql = timed("sql (again)", rows, lambda: journey_frames_from_json(texts, LOADED))
    print(f"  -> {len(sql.steps):,} step rows, {len(sql.rejected):,} rejected")
    envelopes = [json.loads(t) for t in texts]
    assert_same(sql, timed("sql via dicts", rows, lambda: journey_frames(envelopes, LOADED)))
    if not args.skip_python:
        python = timed("python", rows, lambda: journey_frames_reference([json.loads(t) for t in texts], LOADED))
        assert_same(sql, python)
    print("identical frames: yes")


if __name__ == "__main__":
    main()
