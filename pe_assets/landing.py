"""The landing zone: raw API responses, unchanged, one immutable file per extraction.

Layout (any fsspec URL through universal-pathlib; a local folder by default)::

    {root}/{dataset}/day={YYYY-MM-DD}/{source_id}/{extracted_at}-{nonce}.json
    {root}/{dataset}/{extracted_at}-{nonce}.json            (datasets without a day)

One answer that covers many days (the journey aggregates source asks for up to 31 days at once)
lands once, without a day, and each day it covers gets a small pointer file under ``day=`` naming
it (``read`` opens it by that name): a day is found the same way for every source, and the
answer itself is stored once, unchanged. The pointers are written after the answer, so a pointer
never names a file that is not whole.

A file is never overwritten: its name carries the extraction time and a random nonce, and the
writer refuses an existing name. Local writes go to a hidden temporary file that is renamed into
place, so a reader never sees half a file; object stores publish a PUT whole. Readers ignore
hidden files. Facts are rebuilt from these files, so history outlives the API (archived campaigns,
retrained scorecards).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from upath import UPath
from upath.implementations.local import LocalPath

# The envelope's own format version, so that readers can evolve with it.
ENVELOPE_VERSION = 1
_SAFE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class LandingError(RuntimeError):
    """A landing file is missing, damaged or would be overwritten."""


@dataclass(frozen=True)
class LandedFile:
    """One extraction as read back: where it lies and what it holds."""

    path: str
    dataset: str
    day: date | None
    source_id: str
    extracted_at: datetime
    envelope: dict[str, Any]


class LandingZone:
    """Append-only store of raw extraction envelopes under one root URL."""

    def __init__(self, root_url: str) -> None:
        self.root = UPath(root_url)

    def __repr__(self) -> str:
        return f"LandingZone({str(self.root)!r})"

    def write(
        self,
        dataset: str,
        source_id: str,
        extracted_at: datetime,
        payload: dict[str, Any],
        day: date | None = None,
    ) -> str:
        """Write one envelope and return its path; never replaces an existing file."""
        _check_id("dataset", dataset)
        _check_id("source_id", source_id)
        if extracted_at.tzinfo is None:
            raise LandingError("extracted_at must be timezone-aware (UTC)")
        extracted_at = extracted_at.astimezone(UTC)
        envelope = {
            "envelope_version": ENVELOPE_VERSION,
            "dataset": dataset,
            "day": day.isoformat() if day else None,
            "source_id": source_id,
            "extracted_at": extracted_at.isoformat(),
            **payload,
        }
        # allow_nan=False: a NaN that slipped through must fail here, not become invalid JSON.
        body = json.dumps(envelope, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        folder = self._folder(dataset, day, source_id)
        name = f"{extracted_at.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}.json"
        target = folder / name
        folder.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise LandingError(f"refusing to overwrite landing file {target}")
        if isinstance(target, LocalPath):
            _atomic_local_write(target, body)
        else:
            target.write_bytes(body)  # an object store PUT is visible whole or not at all
        return str(target)

    def files(self, dataset: str, day: date | None = None) -> list[LandedFile]:
        """Every complete extraction of a dataset (and day), oldest first."""
        if day is None:
            folder = self.root / dataset
            candidates: Iterator[UPath] = (p for p in _children(folder) if _is_landing_file(p))
        else:
            folder = self._folder(dataset, day, None)
            candidates = (f for src in _children(folder) for f in _children(src) if _is_landing_file(f))
        landed = [self._read(path, dataset) for path in candidates]
        return sorted(landed, key=lambda f: (f.extracted_at, f.path))

    def read(self, dataset: str, name: str) -> LandedFile:
        """One day-less file of ``dataset`` by its file name (as a day's pointer names it)."""
        _check_id("landing file name", name)
        path = self.root / dataset / name
        if not path.exists():
            raise LandingError(f"landing file {path} is missing")
        return self._read(path, dataset)

    def latest_per_source(self, dataset: str, day: date) -> dict[str, LandedFile]:
        """The newest extraction of each source for a day."""
        latest: dict[str, LandedFile] = {}
        for landed in self.files(dataset, day):  # oldest first, so later ones win
            latest[landed.source_id] = landed
        return latest

    def _folder(self, dataset: str, day: date | None, source_id: str | None) -> UPath:
        folder = self.root / dataset
        if day is not None:
            folder = folder / f"day={day.isoformat()}"
        if source_id is not None and day is not None:
            folder = folder / source_id
        return folder

    def _read(self, path: UPath, dataset: str) -> LandedFile:
        try:
            envelope = json.loads(path.read_bytes())
            day_text = envelope["day"]
            return LandedFile(
                path=str(path),
                dataset=dataset,
                day=date.fromisoformat(day_text) if day_text else None,
                source_id=envelope["source_id"],
                extracted_at=datetime.fromisoformat(envelope["extracted_at"]),
                envelope=envelope,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LandingError(f"landing file {path} is damaged: {exc}") from exc


def _check_id(kind: str, value: str) -> None:
    # Ids become path segments: refuse anything that could climb or split the tree.
    if not value or value.startswith(".") or not set(value) <= _SAFE_ID_CHARS:
        raise LandingError(f"{kind} {value!r} cannot be used in a landing path")


def _children(folder: UPath) -> list[UPath]:
    try:
        return list(folder.iterdir()) if folder.exists() else []
    except FileNotFoundError:
        return []


def _is_landing_file(path: UPath) -> bool:
    return path.name.endswith(".json") and not path.name.startswith(".")


def _atomic_local_write(target: UPath, body: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "xb") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o444)  # raw history is read-only: an accidental rewrite fails loudly
    # os.link fails if the target exists, so even a racing writer cannot overwrite it.
    os.link(tmp, target)
    os.unlink(tmp)
