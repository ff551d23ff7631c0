"""The watcher's live view: one row per device, redrawn in a terminal, plain lines in a log.

Kept apart from the MQTT side so what a person reads is a pure function of the counts, tested as text.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from edge.watch.store import parse_ts

RATE_WINDOW = 60.0  # seconds behind events/min
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 (newline, escape), DEL and C1


def printable(text: str) -> str:
    """``text`` with its control characters shown as ``\\xNN``: a label or topic another client chose reaches a
    terminal or a log, where an escape sequence would retitle or clear the screen and a newline fake a line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


@dataclass
class DeviceView:
    """What the watcher last heard from one device."""

    device: str
    faces: int | None = None
    emotion: str = "?"
    since: float | None = None  # when ``emotion`` began, by the device's state messages
    predominant: str = ""  # the last summary's
    _events: deque[float] = field(default_factory=deque, repr=False)

    def seen_event(self, received: float) -> None:
        self._events.append(received)

    def seen_state(self, body: Mapping[str, Any]) -> None:
        if body["emotion"] != self.emotion or self.since is None:
            self.since = parse_ts(body["ts"])
        self.faces, self.emotion = body["faces"], body["emotion"]

    def seen_summary(self, body: Mapping[str, Any]) -> None:
        self.predominant = body["predominant"]

    def snapshot(self, now: float) -> Row:
        while self._events and self._events[0] < now - RATE_WINDOW:
            self._events.popleft()
        return Row(self.device, self.faces, self.emotion, self.since, len(self._events) * 60.0 / RATE_WINDOW,
                   self.predominant)  # fmt: skip


@dataclass(frozen=True)
class Row:
    device: str
    faces: int | None
    emotion: str
    since: float | None
    per_minute: float
    predominant: str


def _clock(t: float | None) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%SZ") if t is not None else "-"


def _cells(row: Row) -> list[str]:
    faces = "-" if row.faces is None else str(row.faces)
    cells = [row.device, faces, row.emotion, _clock(row.since), f"{row.per_minute:.1f}", row.predominant or "-"]
    return [printable(cell) for cell in cells]


HEADER = ["device", "faces", "emotion", "since", "events/min", "last summary"]


def _totals(stored: int, duplicates: int, malformed: int) -> str:
    return f"{stored} events stored, {duplicates} duplicates dropped, {malformed} malformed skipped"


def render_table(rows: Sequence[Row], stored: int, duplicates: int, malformed: int) -> str:
    """A fixed-width table for a terminal."""
    body = [_cells(r) for r in sorted(rows, key=lambda r: r.device)]
    widths = [max(len(line[i]) for line in [HEADER, *body]) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [HEADER, *body]]
    return "\n".join([*lines, "", _totals(stored, duplicates, malformed)]) + "\n"


def render_lines(rows: Sequence[Row], stored: int, duplicates: int, malformed: int) -> str:
    """One ``key=value`` line per device, for a log or a pipe (no cursor movement)."""
    lines = [
        " ".join(f"{key.replace(' ', '_').replace('/', '_per_')}={cell}" for key, cell in zip(HEADER, _cells(r)))
        for r in sorted(rows, key=lambda r: r.device)
    ]
    return "\n".join([*lines, f"watch: {_totals(stored, duplicates, malformed)}"]) + "\n"
