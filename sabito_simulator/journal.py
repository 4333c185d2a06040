"""The simulator's memory across restarts: a file of the changes its controls made.

A real Sabito keeps its customers when NEXPro restarts; a simulator that regenerated
its seeded data on every start would forget the customers the demo edited and added,
and then, drawing the same "random" changes again, make exactly the changes NEXPro
already holds. With a state file the simulator starts from the same seeded data on the
same epoch and replays the changes in order, which also leaves its control stream
where it stopped: the next edit is a new one.

The file is JSON lines: a header saying which seeded data the changes apply to, then
one line per change. Lines are appended and flushed one at a time, so a simulator
killed mid-write loses at most the line it was writing (an unreadable last line is
ignored); a header for other data (another seed, say) starts the file afresh.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path


class ChangeJournal:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def epoch(self, identity: dict) -> datetime | None:
        """The epoch the file's changes were made on, if it holds changes for this data."""
        header, _ = self._read()
        if header is None or _identity(header) != identity:
            return None
        return datetime.fromtimestamp(header["epochMs"] / 1000, tz=UTC)

    def open(self, header: dict) -> list[dict]:
        """The changes to replay onto the data `header` describes; a file for other data
        (or none) is started afresh with this header."""
        stored, changes = self._read()
        if stored == header:
            return changes
        self._write_header(header)
        return []

    def append(self, change: dict) -> None:
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(change, separators=(",", ":")) + "\n")
            file.flush()

    def clear(self) -> None:
        """Forget every change, keeping the header (a reset goes back to the seeded data)."""
        header, _ = self._read()
        if header is not None:
            self._write_header(header)

    def _write_header(self, header: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(header, separators=(",", ":")) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)  # never a half-written header

    def _read(self) -> tuple[dict | None, list[dict]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None, []
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # the line being written when the simulator stopped
        if not records or not isinstance(records[0], dict) or "epochMs" not in records[0]:
            return None, []
        return records[0], [change for change in records[1:] if _is_change(change)]


def _identity(header: dict) -> dict:
    return {key: value for key, value in header.items() if key != "epochMs"}


def _is_change(change) -> bool:
    return (
        isinstance(change, dict)
        and change.get("action") in ("edit", "add", "delete")
        and isinstance(change.get("businessId"), str)
        and isinstance(change.get("count"), int)
        and isinstance(change.get("nowMs"), int)
    )
