"""``emotion-edge report``: what a fleet or a recording felt, as one self-contained HTML page or a PNG.

The numbers come from :mod:`edge.report.timeline` (pure Python, tested against hand-counted
events); drawing needs matplotlib, from the ``[report]`` extra, which a Pi's runtime never installs.
Every number shown is also embedded in the output (a JSON block in the page, a ``Description``
text chunk in the PNG), so a script or a test reads the same figures a person sees.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import re
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from edge.report import timeline
from edge.report.timeline import Segment
from edge.tools.outputs import check_output
from edge.watch.store import Store, StoredEvent, StoreError, parse_ts

log = logging.getLogger(__name__)

GROUP_BY = ("device", "hour")
PAGE_SUFFIXES = (".html", ".htm")
SUFFIXES = (*PAGE_SUFFIXES, ".png")  # what write() draws
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# What one page shows, whatever the databases hold (a client inventing a million device names, or labels):
MAX_ROWS = 100  # rows of the table, the devices (or hours) with the most face-time; ``overall`` counts all
MAX_VISITS_LISTED = 1000  # visits listed, the latest; all are counted
MAX_LABELS = 16  # emotions with a column and a colour, those most events score (a model has 7)


class ReportError(ValueError):
    """An input or output that cannot be used; the message names it."""


def parse_since(text: str, now: float | None = None) -> float:
    """``24h``, ``90m``, ``7d``, ``30s`` before now, or an ISO 8601 time (UTC unless it names a zone);
    seconds since the epoch, and no earlier than the epoch: before it there are no events."""
    match = _SPAN.match(text.strip())
    if match:
        since = (time.time() if now is None else now) - float(match.group(1)) * _UNIT[match.group(2)]
    else:
        try:
            since = parse_ts(text)
        except (ValueError, OverflowError):
            raise ReportError(f"--since {text!r}: expected a span such as 24h, 90m, 7d, or an ISO 8601 time") from None
    return max(since, 0.0)


@dataclass
class Report:
    """Everything a report shows; ``wall`` says whether times are epoch seconds (a fleet) or clip seconds."""

    title: str
    labels: tuple[str, ...]
    wall: bool
    group_by: str
    segments: list[Segment]
    faces: dict[int, dict[str, list[float]]] | None = None  # recordings: per track, "t" and one list per label

    @cached_property
    def _table(self) -> tuple[list[dict[str, Any]], int]:
        return timeline.table(self.segments, self.labels, self.group_by, limit=MAX_ROWS)

    def table(self) -> list[dict[str, Any]]:
        return self._table[0]

    @property
    def rows_left_out(self) -> int:
        """Devices (hours, faces) with less face-time than the MAX_ROWS in the table."""
        return self._table[1]

    def visits(self) -> list[timeline.Visit]:
        return timeline.visits(self.segments)

    def timeline(self) -> dict[str, Any]:
        return timeline.timeline(self.segments, self.labels)

    def to_dict(self) -> dict[str, Any]:
        visits = self.visits()
        return {
            "title": self.title,
            "labels": list(self.labels),
            "group_by": self.group_by,
            "table": self.table(),
            "rows_left_out": self.rows_left_out,
            "visits_total": len(visits),
            "visits": [
                {
                    "group": v.group,
                    "track": v.track,
                    "t0": round(v.t0, 3),
                    "t1": round(v.t1, 3),
                    "predominant": v.predominant,
                    "seconds": {k: round(s, 3) for k, s in v.seconds.items()},
                }
                for v in visits[-MAX_VISITS_LISTED:]
            ],
        }


def from_databases(
    paths: Sequence[str | Path], *, since: float | None = None, device: str | None = None, group_by: str = "device"
) -> Report:
    """One report over the events of one or more watcher databases (several watchers, one fleet)."""
    events: list[StoredEvent] = []
    last_seen: dict[str, float] = {}
    for path in paths:
        try:
            store = Store(path, readonly=True)
        except StoreError as exc:
            raise ReportError(str(exc)) from None
        try:
            events += store.events(since=since, device=device)
            for name, t in store.last_seen().items():
                last_seen[name] = max(t, last_seen.get(name, t))
            if skipped := store.implausible():
                log.warning("report: %s: %d rows left out, dated over a day after they arrived or with an impossible "
                            "duration (stored before watch refused such messages)", path, skipped)  # fmt: skip
        except sqlite3.Error as exc:  # opened, but a page of it is damaged, or another program holds it locked
            raise ReportError(f"{path}: cannot read database ({exc})") from None
        finally:
            store.close()
    if not events:
        selected = f" from device {device!r}" if device is not None else ""
        if since is not None:
            selected += f" since {datetime.fromtimestamp(since, timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
        log.warning("report: no events in %s%s; the report shows 0 visits", ", ".join(map(str, paths)), selected)
    events.sort(key=lambda e: e.t)
    title = f"emotion-edge: {device or 'all devices'}"
    labels = _labels(e.scores for e in events)
    return Report(title, labels, True, group_by, timeline.from_events(events, last_seen))


def _labels(scores: Iterable[Mapping[str, float]]) -> tuple[str, ...]:
    """The labels the scores name, in the order first seen, or past MAX_LABELS the ones most scores name."""
    named: dict[str, int] = {}
    for one in scores:
        for label in one:
            named[label] = named.get(label, 0) + 1
    kept = set(heapq.nlargest(MAX_LABELS, named, key=named.__getitem__))
    return tuple(label for label in named if label in kept)


def from_records(records: Iterable[Mapping[str, Any]], *, fps: float, source: str) -> Report:
    """A report of an ``analyze`` run: its per-frame records, with every face's scores over time."""
    records = list(records)
    faces: dict[int, dict[str, list[float]]] = {}
    for record in records:
        for face in record["faces"]:
            series = faces.setdefault(int(face["track"]), {"t": []})
            series["t"].append(float(record["ts"]))
            for label, p in face["scores"].items():
                series.setdefault(label, []).append(float(p))
    if not faces:
        where = f"the {len(records)} frames of {source}" if records else f"{source}: it has no frames"
        log.warning("report: no faces in %s; the report shows 0 visits", where)
    labels = _labels(face["scores"] for record in records for face in record["faces"])
    return Report(f"emotion-edge: {source}", labels, False, "device", timeline.from_frames(records, fps), faces)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _frame_fault(record: object) -> str | None:
    """What keeps ``record`` from being one of ``analyze``'s frames (edge.tools.analyze.frame_record), if anything."""
    if not isinstance(record, dict) or "ts" not in record or "faces" not in record:
        return "it needs ts and faces"
    if not _number(record["ts"]):
        return f"ts {record['ts']!r:.40} is not a number"
    if not isinstance(record["faces"], list):
        return "faces is not a list"
    for face in record["faces"]:
        if not isinstance(face, dict):
            return "a face is not an object"
        if not isinstance(face.get("track"), int) or isinstance(face.get("track"), bool):
            return f"track {face.get('track')!r:.40} is not an integer"
        if not isinstance(face.get("emotion"), str):
            return f"emotion {face.get('emotion')!r:.40} is not a label"
        scores = face.get("scores")
        if not isinstance(scores, dict) or not all(_number(p) for p in scores.values()):
            return f"scores {scores!r:.40} are not numbers by label"
    return None


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], float]:
    """``analyze`` output: frame records; the frame rate is taken from their time steps."""
    records = []
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError as exc:
                        raise ReportError(f"{path}:{number}: not a JSON line ({exc})") from None
                    fault = _frame_fault(record)
                    if fault:
                        raise ReportError(f"{path}:{number}: not an `emotion-edge analyze` frame ({fault})")
                    records.append(record)
    except OSError as exc:
        raise ReportError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not text, so not `emotion-edge analyze` JSON lines") from None
    steps = sorted(b["ts"] - a["ts"] for a, b in zip(records, records[1:]) if b["ts"] > a["ts"])
    fps = 1.0 / steps[len(steps) // 2] if steps else 0.0
    return records, fps


def write(report: Report, out: str | Path) -> Path:
    """``.html``/``.htm``: the page; ``.png``: the figure alone, the numbers drawn in as a table."""
    from edge.report import render

    out = check_output(out, SUFFIXES)
    if out.suffix.lower() in PAGE_SUFFIXES:
        render.write_html(report, out)
    else:
        render.write_png(report, out)
    return out
