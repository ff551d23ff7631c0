"""What a report says, computed from what was stored: who was seen when, under which emotion.

Both inputs become the same thing, a list of :class:`Segment` (a stretch of one visit under one
emotion), and every number of a report is a sum over segments, so a fleet's database and a
recording's frames are summarised by one piece of code:

- from stored events, a visit runs from its ``start`` (dated ``ts - duration``: ``duration``
  counts from the first sighting) through each ``change`` to its ``end``. A visit first heard of
  mid-way (the watcher started later, or ``--since`` cut it) starts at that event, under that
  event's emotion; one with no ``end`` yet is cut at the last time its device was heard from, or,
  once the device has started again (a new ``run``: a crash or a power cut lost the ``end``), at the
  last event of its own run.
- from ``analyze`` frames, each face on a frame counts for one frame time (1/fps).

Shares are of face-time: two faces happy for a minute weigh as much as one face for two.
"""

from __future__ import annotations

import heapq
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from edge.watch.store import StoredEvent

NO_FACE = "none"


@dataclass(frozen=True)
class Segment:
    group: str  # a device, or "recording"
    visit: str  # unique over the report: device/run/track@start, or the recording's "track N"
    track: int
    t0: float
    t1: float
    emotion: str

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


@dataclass
class Visit:
    group: str
    visit: str
    track: int
    t0: float
    t1: float
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def predominant(self) -> str:
        return predominant(self.seconds)


@dataclass
class _Open:
    group: str
    visit: str
    track: int
    mark: float
    emotion: str


def from_events(events: Iterable[StoredEvent], last_seen: Mapping[str, float]) -> list[Segment]:
    """Segments from events in time order; ``last_seen`` cuts the visits still open per device."""
    segments: list[Segment] = []
    live: dict[tuple[str, str | None, int], _Open] = {}
    runs: dict[str, tuple[str | None, float]] = {}  # device -> its current run and that run's last event

    def cut(key: tuple[str, str | None, int], until: float) -> None:
        visit = live.pop(key)
        if until > visit.mark:
            segments.append(Segment(visit.group, visit.visit, visit.track, visit.mark, until, visit.emotion))

    for e in events:
        run, last = runs.get(e.device, (e.run, e.t))
        if e.run != run:  # the device started again: what its old run left open ended with that run
            for key in [k for k in live if k[0] == e.device and k[1] == run]:
                cut(key, last)
        runs[e.device] = (e.run, e.t)
        key = (e.device, e.run, e.track)
        if e.type == "start" or key not in live:
            if key in live:  # a start for a live visit: its end was lost; it lasted until its last news
                cut(key, live[key].mark)
            begun = e.t - e.duration if e.type == "start" else e.t
            name = f"{e.device}/{e.run or '-'}/{e.track}@{begun:.3f}"
            live[key] = _Open(e.device, name, e.track, begun, e.emotion)
        visit = live[key]
        if e.type == "change":
            if e.t > visit.mark:
                segments.append(Segment(visit.group, visit.visit, visit.track, visit.mark, e.t, visit.emotion))
            visit.mark, visit.emotion = max(visit.mark, e.t), e.emotion
        elif e.type == "end":
            cut(key, e.t)
    for key, visit in list(live.items()):
        cut(key, max(visit.mark, last_seen.get(visit.group, visit.mark)))
    return segments


def from_frames(frames: Iterable[Mapping[str, Any]], fps: float) -> list[Segment]:
    """Segments from ``analyze`` records, grouped by face ("track N"): a face's run of frames in a row under
    one emotion makes one segment of (frames x frame time), so shares are exactly shares of frames."""
    frame_time = 1.0 / fps if fps > 0 else 1.0
    segments: list[Segment] = []
    runs: dict[int, tuple[float, int, str]] = {}  # track -> (first ts, frames, emotion)

    def close(track: int) -> None:
        t0, count, emotion = runs.pop(track)
        segments.append(Segment(f"track {track}", f"track {track}", track, t0, t0 + count * frame_time, emotion))

    for record in frames:
        seen = set()
        for face in record["faces"]:
            track, emotion = int(face["track"]), face["emotion"]
            seen.add(track)
            if track in runs and runs[track][2] != emotion:
                close(track)
            t0, count, _ = runs.get(track, (float(record["ts"]), 0, emotion))
            runs[track] = (t0, count + 1, emotion)
        for track in [t for t in runs if t not in seen]:
            close(track)
    for track in list(runs):
        close(track)
    return sorted(segments, key=lambda s: (s.t0, s.visit))


def visits(segments: Iterable[Segment]) -> list[Visit]:
    """One per visit, in order of arrival, with its seconds under each emotion."""
    found: dict[str, Visit] = {}
    for s in segments:
        v = found.setdefault(s.visit, Visit(s.group, s.visit, s.track, s.t0, s.t1))
        v.t0, v.t1 = min(v.t0, s.t0), max(v.t1, s.t1)
        v.seconds[s.emotion] = v.seconds.get(s.emotion, 0.0) + s.seconds
    return sorted(found.values(), key=lambda v: (v.t0, v.visit))


def shares(seconds: Mapping[str, float], labels: Sequence[str]) -> dict[str, float]:
    total = sum(seconds.values())
    return {label: round(seconds.get(label, 0.0) / total, 4) if total else 0.0 for label in labels}


def predominant(seconds: Mapping[str, float]) -> str:
    """The emotion of most face-time; a tie (to the microsecond, so summing order cannot break it) goes to
    the one seen first."""
    return max(seconds.items(), key=lambda kv: round(kv[1], 6))[0] if any(seconds.values()) else NO_FACE


def _natural(name: str) -> list[Any]:
    """ "track 2" before "track 10"."""
    return [int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", name)]  # not "²"


def hour_of(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:00Z")


def clip(segments: Iterable[Segment], t0: float, t1: float) -> Iterable[tuple[Segment, float]]:
    """Each segment with the seconds of it inside [t0, t1)."""
    for s in segments:
        inside = min(s.t1, t1) - max(s.t0, t0)
        if inside > 0:
            yield s, inside


def table(
    segments: Sequence[Segment], labels: Sequence[str], group_by: str, *, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """The report's rows: one per device (or hour, or recording track), then ``overall``; and how many were
    left out: past ``limit``, only the ``limit`` with the most face-time are rows (``overall`` counts all)."""
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    counted: dict[str, set[str]] = defaultdict(set)
    overall: dict[str, float] = {}  # apart from the rows: a device may be named "overall" too
    seen: set[str] = set()

    def add(name: str, s: Segment, seconds: float) -> None:
        rows[name][s.emotion] = rows[name].get(s.emotion, 0.0) + seconds
        counted[name].add(s.visit)

    for s in segments:
        if group_by == "hour":
            start = s.t0 - s.t0 % 3600
            while start < s.t1:
                for _, inside in clip([s], start, start + 3600):
                    add(hour_of(start), s, inside)
                start += 3600
        else:
            add(s.group, s, s.seconds)
        overall[s.emotion] = overall.get(s.emotion, 0.0) + s.seconds
        seen.add(s.visit)
    kept = heapq.nlargest(limit, rows, key=lambda n: sum(rows[n].values()))
    listed = [(name, rows[name], len(counted[name])) for name in sorted(kept, key=_natural)]
    if segments:
        listed.append(("overall", overall, len(seen)))
    return [
        {
            "name": name,
            "visits": count,
            "face_seconds": round(sum(seconds.values()), 3),
            "predominant": predominant(seconds),
            "share": shares(seconds, labels),
        }
        for name, seconds, count in listed
    ], len(rows) - len(kept)


def timeline(segments: Sequence[Segment], labels: Sequence[str], bins: int = 100) -> dict[str, Any]:
    """Each emotion's share of face-time per time bin (all zero where nobody was in view)."""
    if not segments:
        return {"t": [], "width": 0.0, "share": {label: [] for label in labels}}
    t0 = min(s.t0 for s in segments)
    t1 = max(s.t1 for s in segments)
    width = max((t1 - t0) / bins, 1e-6)
    seconds = [dict.fromkeys(labels, 0.0) for _ in range(bins)]
    for s in segments:
        first = max(0, min(bins - 1, int((s.t0 - t0) / width)))
        last = max(0, min(bins - 1, int((s.t1 - t0) / width)))
        for b in range(first, last + 1):
            for _, inside in clip([s], t0 + b * width, t0 + (b + 1) * width):
                seconds[b][s.emotion] = seconds[b].get(s.emotion, 0.0) + inside
    per_bin = [shares(bin_seconds, labels) for bin_seconds in seconds]
    return {
        "t": [t0 + (b + 0.5) * width for b in range(bins)],
        "width": width,
        "share": {label: [row[label] for row in per_bin] for label in labels},
    }
